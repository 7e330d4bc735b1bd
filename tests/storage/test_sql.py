from __future__ import annotations

import pytest

from schemas.records import VideoOutcome
from storage.catalog import Catalog
from storage.sql import MAX_LIMIT, CompiledQuery, SqlError, compile_sql, compile_where, execute


@pytest.fixture
def filled(store, make_batch, fake):
    """news: n1 (3 clips), n2 (2 clips); sport: s1 (2 clips); catalog rows for all."""
    news, news_meta = make_batch({"n1": 3, "n2": 2}, archive="news")
    sport, sport_meta = make_batch({"s1": 2}, archive="sport", seed=5)
    store.write_memories(news + sport, fake.encoder, news_meta | sport_meta)
    outcomes = [VideoOutcome(t, "done", n_clips=2) for t in (news_meta | sport_meta).values()]
    Catalog(store).record(outcomes, fake.encoder)
    return store, news, sport


def test_compile_relevance_query():
    q = compile_sql(
        "SELECT video_id, t_start, t_end, score FROM memories "
        "WHERE archive = 'news' AND t_start > 600 "
        "ORDER BY relevance('who speaks at the podium?') LIMIT 5"
    )
    assert q == CompiledQuery(
        table="memories",
        columns=["video_id", "t_start", "t_end", "score"],
        where="archive = 'news' AND t_start > 600",
        relevance="who speaks at the podium?",
        order_by=[("score", True)],
        limit=5,
    )


def test_compile_star_order_and_defaults():
    q = compile_sql("select * from VIDEOS v where v.size > 10 order by v.size desc, uri")
    assert q.table == "videos" and "etag" in q.columns and "score" not in q.columns
    assert q.where == "size > 10" and q.relevance is None and q.limit == 10
    assert q.order_by == [("size", True), ("uri", False)]


def test_where_is_regenerated_from_the_ast():
    where = compile_where(
        "array_has(tags, 'a') AND lower(archive) LIKE 'n%' -- a comment\n"
        "AND recorded_at >= TIMESTAMP '2024-01-01 00:00:00' AND clip_index IN (0, 1)"
    )
    assert "comment" not in where
    assert where == (
        "ARRAY_CONTAINS(tags, 'a') AND LOWER(archive) LIKE 'n%' AND "
        "recorded_at >= CAST('2024-01-01 00:00:00' AS TIMESTAMP) AND clip_index IN (0, 1)"
    )


@pytest.mark.parametrize(
    ("predicate", "videos"),
    [
        ("archive = 'sport'", {"s1"}),
        ("array_has(tags, 'a') AND archive <> 'sport'", {"n1", "n2"}),
        ("array_contains(tags, 'zzz')", set()),
        ("upper(archive) LIKE 'SP%'", {"s1"}),
        ("clip_index BETWEEN 2 AND 5", {"n1"}),
        (
            "recorded_at >= TIMESTAMP '2024-01-02 00:00:00' AND recorded_at < DATE '2024-01-03'",
            {"n1", "n2", "s1"},
        ),
        ("uri IS NULL OR t_start + 16 > 40", {"n1"}),
        ("NOT archive IN ('news') AND array_length(tags) = 1", {"s1"}),
        ("archive = 'x'' OR 1=1 --'", set()),  # a quote inside a literal stays a literal
    ],
)
def test_filtered_scan_executes_in_lance(filled, predicate, videos):
    store, news, sport = filled
    names = {r.video_id: n for r, n in [(news[0], "n1"), (news[3], "n2"), (sport[0], "s1")]}
    result = execute(
        store, compile_sql(f"SELECT video_id FROM memories WHERE {predicate} LIMIT 100")
    )
    assert {names[v] for v in result["video_id"].to_pylist()} == videos


def test_order_by_columns_is_a_global_top_k(filled):
    store, news, _ = filled
    result = execute(
        store,
        compile_sql(
            "SELECT video_id, t_start FROM memories ORDER BY t_start DESC, video_id LIMIT 2"
        ),
    )
    assert result.column_names == ["video_id", "t_start"]
    assert result["t_start"].to_pylist() == [32.0, 16.0]
    assert result["video_id"][0].as_py() == news[2].video_id


def test_relevance_executes_as_filtered_vector_search(filled):
    store, news, sport = filled
    q = compile_sql(
        "SELECT video_id, clip_index, score FROM memories WHERE archive = 'news' "
        "ORDER BY relevance('anything') LIMIT 3"
    )
    result = execute(store, q, sport[0].archive_key)  # nearest overall is sport: filtered out
    assert result.column_names == ["video_id", "clip_index", "score"]
    assert result.num_rows == 3
    assert sport[0].video_id not in result["video_id"].to_pylist()
    scores = result["score"].to_pylist()
    assert scores == sorted(scores, reverse=True)
    exact = execute(store, q, news[1].archive_key).to_pylist()[0]
    assert (exact["video_id"], exact["clip_index"]) == (news[1].video_id, 1)
    assert exact["score"] == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(SqlError, match="needs the question encoded"):
        execute(store, q, None)


def test_relevance_then_column_reorders_the_top_rows(filled):
    store, news, _ = filled
    q = compile_sql("SELECT clip_index FROM memories ORDER BY video_id, relevance('q') LIMIT 7")
    assert q.order_by == [("video_id", False), ("score", True)]
    assert execute(store, q, news[0].archive_key).num_rows == 7


def test_videos_table_query(filled):
    store, *_ = filled
    result = execute(
        store, compile_sql("SELECT uri, status FROM videos WHERE status = 'done' ORDER BY uri DESC")
    )
    assert result["uri"].to_pylist() == ["/archive/s1.mp4", "/archive/n2.mp4", "/archive/n1.mp4"]


def test_type_errors_from_lance_become_sql_errors(filled):
    store, *_ = filled
    with pytest.raises(SqlError, match="query failed"):
        execute(store, compile_sql("SELECT video_id FROM memories WHERE tags > 'a' AND tags < 3"))


def test_malicious_statement_is_refused_and_nothing_changes(filled):
    store, *_ = filled
    before = store.count()
    for text in [
        "SELECT * FROM memories WHERE 1=1; DROP TABLE memories",
        "SELECT * FROM memories; DELETE FROM memories",
    ]:
        with pytest.raises(SqlError, match="only one statement is allowed, got 2"):
            compile_sql(text)
    with pytest.raises(SqlError, match="only one statement"):
        compile_where("1=1; DROP TABLE memories")
    assert store.count() == before == 7
    assert store.open_table("memories").count_rows() == 7


REJECTED = [
    ("SELEC video_id FROM memories", "syntax error"),
    ("SELECT video_id FROM memories WHERE archive = 'news", "syntax error"),
    ("SELECT video_id FROM memories WHERE (t_start > 1", "syntax error"),
    ("", "empty query"),
    (
        "INSERT INTO memories (video_id) VALUES ('x')",
        "only SELECT statements are allowed, got INSERT",
    ),
    ("UPDATE memories SET archive = 'x'", "only SELECT statements are allowed, got UPDATE"),
    ("DELETE FROM memories WHERE 1 = 1", "only SELECT statements are allowed, got DELETE"),
    ("DROP TABLE memories", "only SELECT statements are allowed, got DROP"),
    ("CREATE TABLE x (a INT)", "only SELECT statements are allowed, got CREATE"),
    ("SELECT video_id FROM memories UNION SELECT video_id FROM videos", "got UNION"),
    ("SELECT * FROM frames", "unknown table 'frames': use one of memories, videos"),
    ("SELECT * FROM other.memories", "unknown table 'other.memories'"),
    ("SELECT 1", "missing FROM"),
    ("SELECT * FROM read_parquet('x')", "FROM takes one table name"),
    (
        "SELECT * FROM memories m JOIN videos v ON m.video_id = v.video_id",
        "joins are not supported",
    ),
    ("SELECT * FROM memories, videos", "joins are not supported"),
    ("SELECT * FROM (SELECT * FROM memories)", "subqueries are not supported"),
    ("SELECT * FROM memories WHERE video_id IN (SELECT video_id FROM videos)", "subqueries"),
    ("SELECT * FROM memories WHERE EXISTS (SELECT 1)", "subqueries"),
    ("WITH x AS (SELECT 1) SELECT * FROM memories", "WITH"),
    (
        "SELECT speaker FROM memories",
        "unknown column 'speaker' in memories; valid columns: video_id",
    ),
    ("SELECT memory FROM memories", "unknown column 'memory'"),
    ("SELECT video_id FROM memories WHERE speaker = 'x'", "unknown column 'speaker'"),
    ("SELECT video_id FROM memories ORDER BY speaker", "unknown column 'speaker'"),
    ("SELECT x.video_id FROM memories", "unknown table 'x' in column x.video_id"),
    (
        "SELECT video_id FROM memories WHERE foo(archive) = 1",
        "unknown function foo(); allowed: lower",
    ),
    (
        "SELECT video_id FROM memories WHERE concat(archive, 'x') = 'a'",
        "function CONCAT is not allowed",
    ),
    ("SELECT video_id FROM memories WHERE now() > recorded_at", "unknown function now()"),
    (
        "SELECT video_id FROM memories WHERE CURRENT_TIMESTAMP > recorded_at",
        "CURRENT_TIMESTAMP is not",
    ),
    ("SELECT video_id FROM memories WHERE relevance('x') > 0.5", "only allowed in ORDER BY"),
    (
        "SELECT video_id FROM memories ORDER BY relevance(42)",
        "relevance() takes one string literal",
    ),
    ("SELECT video_id FROM memories ORDER BY relevance(archive)", "one string literal"),
    ("SELECT video_id FROM memories ORDER BY relevance('a', 'b')", "one string literal"),
    ("SELECT video_id FROM memories ORDER BY relevance('  ')", "non-empty question"),
    ("SELECT video_id FROM memories ORDER BY relevance('a') ASC", "remove ASC"),
    ("SELECT * FROM memories ORDER BY relevance('a'), relevance('b')", "only one relevance"),
    ("SELECT uri FROM videos ORDER BY relevance('a')", "relevance() searches memories only"),
    ("SELECT relevance('a') FROM memories", "select list takes column names"),
    ("SELECT video_id AS v FROM memories", "select list takes column names"),
    ("SELECT video_id FROM memories HAVING t_start > 1", "HAVING is not supported"),
    ("SELECT video_id, count(*) FROM memories", "column video_id must be in GROUP BY"),
    ("SELECT video_id FROM memories ORDER BY max(t_start)", "video_id must be in GROUP BY"),
    ("SELECT * FROM videos GROUP BY archive", "SELECT * cannot be combined with GROUP BY"),
    ("SELECT count(DISTINCT video_id) FROM memories", "GROUP BY the column instead"),
    ("SELECT sum(archive) FROM memories", "SUM(archive) needs a numeric column"),
    ("SELECT max(tags) FROM videos", "cannot MAX the list column tags"),
    ("SELECT archive FROM videos GROUP BY tags", "cannot GROUP BY the list column tags"),
    ("SELECT archive FROM videos GROUP BY lower(archive)", "GROUP BY takes column names"),
    ("SELECT count(*) FROM memories ORDER BY relevance('x')", "relevance() cannot be combined"),
    ("SELECT archive, count(*) FROM videos GROUP BY archive ORDER BY size", "ORDER BY size: a"),
    ("SELECT video_id FROM memories WHERE count(*) > 1", "COUNT is not allowed in WHERE"),
    ("SELECT stddev(t_start) FROM memories", "aggregate STDDEV is not supported; use COUNT(*)"),
    ("SELECT count(*) AS n, count(*) AS n FROM memories", "'n' appears twice"),
    ("SELECT count(*) + 1 FROM memories", "takes grouped columns and aggregates"),
    ("SELECT min(t_start + 1) FROM memories", "MIN() takes one column name"),
    (
        "SELECT video_id, count(*) FROM memories GROUP BY video_id HAVING count(*) > 1",
        "HAVING is not supported",
    ),
    ("SELECT DISTINCT video_id FROM memories", "DISTINCT is not supported"),
    ("SELECT video_id FROM memories LIMIT 5 OFFSET 2000000", "OFFSET must be between 0 and"),
    ("SELECT video_id FROM memories OFFSET 'a'", "OFFSET takes an integer"),
    (
        "SELECT video_id FROM memories ORDER BY relevance('a') LIMIT 10000 OFFSET 1",
        "with relevance() OFFSET + LIMIT is at most 10000",
    ),
    ("SELECT score FROM memories", "score exists only with ORDER BY relevance"),
    ("SELECT video_id FROM memories WHERE score > 0.5 ORDER BY relevance('x')", "not in WHERE"),
    ("SELECT video_id FROM memories ORDER BY score", "score exists only"),
    ("SELECT video_id FROM memories ORDER BY tags", "cannot ORDER BY the list column tags"),
    ("SELECT video_id FROM memories ORDER BY t_start + 1", "ORDER BY takes columns"),
    ("SELECT video_id FROM memories LIMIT 0", f"LIMIT must be between 1 and {MAX_LIMIT}"),
    ("SELECT video_id FROM memories LIMIT 20000", "LIMIT must be between 1 and 10000, got 20000"),
    ("SELECT video_id FROM memories LIMIT 'a'", "LIMIT takes an integer"),
    ("SELECT video_id FROM memories WHERE CAST(archive AS INT) = 1", "unsupported cast"),
    (
        "SELECT video_id FROM memories WHERE recorded_at > TIMESTAMP 'yesterday'",
        "invalid TIMESTAMP",
    ),
    ("SELECT video_id FROM memories WHERE t_start = ?", "unsupported expression in WHERE: ?"),
]


@pytest.mark.parametrize(("text", "message"), REJECTED)
def test_rejections_name_the_problem(text, message):
    with pytest.raises(SqlError) as info:
        compile_sql(text)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("predicate", "message"),
    [
        ("", "empty WHERE predicate"),
        ("archive = 'news' ORDER BY t_start", "condition only, found ORDER"),
        ("archive = 'news' LIMIT 5", "condition only, found LIMIT"),
        ("speaker = 'x'", "unknown column 'speaker'"),
        ("archive = 'a') OR (1 = 1", "syntax error"),
    ],
)
def test_compile_where_rejections(predicate, message):
    with pytest.raises(SqlError, match=message.replace("(", r"\(")):
        compile_where(predicate)


def test_compile_where_accepts_a_plain_predicate():
    assert (
        compile_where("archive = 'news' AND NOT t_start < 5")
        == "archive = 'news' AND NOT t_start < 5"
    )
    assert compile_where("status = 'done'", table="videos") == "status = 'done'"


@pytest.mark.parametrize("limit", [1, 3, 10])
def test_only_visible_videos_count_towards_the_limit(filled, limit):
    """Rows of videos outside ``visible`` (not done in the catalog) are never returned, and
    LIMIT counts the visible rows: the search asks again when hidden rows took places."""
    store, news, sport = filled
    hidden = news[0].video_id  # n1, the nearest video to its own first clip
    visible = frozenset({news[3].video_id, sport[0].video_id})  # n2 and s1: 4 clips
    ranked = compile_sql(f"SELECT video_id FROM memories ORDER BY relevance('q') LIMIT {limit}")
    plain = compile_sql(f"SELECT video_id, t_start FROM memories LIMIT {limit}")
    ordered = compile_sql(f"SELECT video_id FROM memories ORDER BY t_start LIMIT {limit}")
    everything = execute(store, ranked, news[0].archive_key)["video_id"].to_pylist()
    assert everything[0] == hidden  # without the filter it would come first
    for compiled in (ranked, plain, ordered):
        rows = execute(store, compiled, news[0].archive_key, visible)["video_id"].to_pylist()
        assert len(rows) == min(limit, 4) and set(rows) <= visible, compiled
    videos = compile_sql("SELECT video_id FROM videos LIMIT 10")  # the catalog: not filtered
    assert execute(store, videos, None, visible).num_rows == 3


# ---- GROUP BY, aggregates, OFFSET, limits -----------------------------------------------
def _all_memories(store, visible=None) -> list[dict]:
    """Every stored row, read plainly (what the aggregates must agree with)."""
    rows = store.open_table("memories").search().limit(None).to_arrow()
    rows = rows.select(["video_id", "clip_index", "t_start", "t_end", "archive"]).to_pylist()
    return [r for r in rows if visible is None or r["video_id"] in visible]


def test_compile_grouped_query():
    q = compile_sql(
        "SELECT archive, COUNT(*) AS N, avg(t_end) FROM memories WHERE t_start > 0 "
        "GROUP BY archive ORDER BY n DESC, max(t_end) LIMIT 5 OFFSET 10"
    )
    assert q.grouped and q.group_by == ["archive"] and q.where == "t_start > 0"
    assert q.columns == ["archive", "n", "avg(t_end)"]  # max(t_end) orders, not shown
    assert [(a.function, a.column, a.name) for a in q.aggregates] == [
        ("count", None, "n"),
        ("avg", "t_end", "avg(t_end)"),
        ("max", "t_end", "max(t_end)"),
    ]
    assert q.order_by == [("n", True), ("max(t_end)", False)]
    assert (q.limit, q.offset) == (5, 10)
    assert not compile_sql("SELECT video_id FROM memories").grouped


def test_group_by_over_the_catalog(filled):
    store, *_ = filled
    result = execute(store, compile_sql("SELECT archive, COUNT(*) FROM videos GROUP BY archive"))
    catalog = store.open_table("videos").search().limit(None).to_arrow()["archive"].to_pylist()
    assert result.column_names == ["archive", "count(*)"]
    assert result.to_pylist() == [
        {"archive": a, "count(*)": catalog.count(a)} for a in sorted(set(catalog))
    ]


def test_aggregates_per_video_match_a_plain_scan_and_respect_visibility(filled):
    """COUNT/MIN/MAX/SUM/AVG per video, filtered, ordered by an aggregate, over visible
    videos only: the same numbers as a plain scan of those rows."""
    store, news, sport = filled
    visible = frozenset({news[0].video_id, sport[0].video_id})  # n1 and s1; n2 hidden
    q = compile_sql(
        "SELECT video_id, COUNT(*) AS clips, MIN(t_start), MAX(t_end), SUM(clip_index), "
        "AVG(t_end) FROM memories WHERE t_start < 40 GROUP BY video_id "
        "ORDER BY clips DESC, video_id LIMIT 10"
    )
    got = execute(store, q, None, visible).to_pylist()
    rows = [r for r in _all_memories(store, visible) if r["t_start"] < 40]
    expected = []
    for video in {r["video_id"] for r in rows}:
        mine = [r for r in rows if r["video_id"] == video]
        expected.append(
            {
                "video_id": video,
                "clips": len(mine),
                "min(t_start)": min(r["t_start"] for r in mine),
                "max(t_end)": max(r["t_end"] for r in mine),
                "sum(clip_index)": sum(r["clip_index"] for r in mine),
                "avg(t_end)": pytest.approx(sum(r["t_end"] for r in mine) / len(mine)),
            }
        )
    expected.sort(key=lambda r: (-r["clips"], r["video_id"]))
    assert got == expected and len(got) == 2
    assert news[3].video_id not in {r["video_id"] for r in got}


def test_global_aggregates_count_visible_rows_and_zero_for_no_match(filled):
    store, news, sport = filled
    visible = frozenset({news[3].video_id, sport[0].video_id})  # n2, s1: 4 clips
    total = compile_sql("SELECT COUNT(*) AS n, MIN(t_start) FROM memories")
    assert execute(store, total).to_pylist() == [{"n": 7, "min(t_start)": 0.0}]
    assert execute(store, total, None, visible)["n"].to_pylist() == [4]
    none = compile_sql("SELECT COUNT(*), AVG(t_end) FROM memories WHERE archive = 'zzz'")
    assert execute(store, none).to_pylist() == [{"count(*)": 0, "avg(t_end)": None}]
    grouped_none = compile_sql(
        "SELECT archive, COUNT(*) FROM memories WHERE archive = 'zzz' GROUP BY archive"
    )
    assert execute(store, grouped_none).num_rows == 0


def test_partial_aggregates_fold_to_the_same_totals(monkeypatch):
    """Batches reduced one by one and folded every few rows give the totals of the whole."""
    import pyarrow as pa

    from storage import sql_groups

    monkeypatch.setattr(sql_groups, "FOLD_ROWS", 2)
    whole = pa.table({"k": ["a", "b", "a", None, "b", "a"], "v": [1.0, 2.0, None, 4.0, 5.0, 6.0]})
    aggs = [
        sql_groups.Aggregate("count", None, "n"),
        sql_groups.Aggregate("count", "v", "nv"),
        sql_groups.Aggregate("avg", "v", "mean"),
        sql_groups.Aggregate("min", "v", "lo"),
    ]
    batches = [whole.slice(i, 1) for i in range(whole.num_rows)]
    folded = sql_groups.aggregate_batches(batches, ["k"], aggs, whole.schema)
    by_key = {r["k"]: r for r in folded.to_pylist()}
    assert by_key["a"] == {"k": "a", "n": 3, "nv": 2, "mean": 3.5, "lo": 1.0}
    assert by_key["b"] == {"k": "b", "n": 2, "nv": 2, "mean": 3.5, "lo": 2.0}
    assert by_key[None] == {"k": None, "n": 1, "nv": 1, "mean": 4.0, "lo": 4.0}


@pytest.mark.parametrize("sort_every", [1, 8_192])
def test_offset_pages_concatenate_to_the_whole_ordered_result(filled, monkeypatch, sort_every):
    import storage.sql as sql

    monkeypatch.setattr(sql, "SORT_EVERY_ROWS", sort_every)  # 1: cut the top rows often
    store, news, sport = filled
    order = "ORDER BY video_id, clip_index DESC"
    whole = execute(
        store, compile_sql(f"SELECT video_id, clip_index FROM memories {order} LIMIT 100")
    )
    pages = [
        execute(
            store,
            compile_sql(f"SELECT video_id, clip_index FROM memories {order} LIMIT 3 OFFSET {o}"),
        )
        for o in (0, 3, 6, 9)
    ]
    assert [p.num_rows for p in pages] == [3, 3, 1, 0]
    assert sum((p.to_pylist() for p in pages), []) == whole.to_pylist()
    assert whole.num_rows == 7


def test_offset_pages_without_order_and_over_visible_rows(filled):
    """Unordered pages (Lance's own OFFSET for the catalog; visible rows counted for
    memories) cover every row once."""
    store, news, sport = filled
    visible = frozenset({news[0].video_id, sport[0].video_id})  # 5 visible clips
    for table, columns, keep, total in (
        ("videos", "video_id", None, 3),
        ("memories", "video_id, clip_index", visible, 5),
    ):
        seen = []
        for offset in range(0, 8, 2):
            q = compile_sql(f"SELECT {columns} FROM {table} LIMIT 2 OFFSET {offset}")
            seen += [tuple(r.values()) for r in execute(store, q, None, keep).to_pylist()]
        assert len(seen) == len(set(seen)) == total  # no row twice, none left out
        if keep is not None:
            assert {video for video, _ in seen} == set(visible)


def test_relevance_pages_are_slices_of_the_ranking(filled):
    store, news, _ = filled
    ranked = "SELECT video_id, clip_index, score FROM memories ORDER BY relevance('q')"
    whole = execute(store, compile_sql(f"{ranked} LIMIT 6"), news[0].archive_key).to_pylist()
    first = execute(store, compile_sql(f"{ranked} LIMIT 3"), news[0].archive_key).to_pylist()
    second = execute(store, compile_sql(f"{ranked} LIMIT 3 OFFSET 3"), news[0].archive_key)
    assert first + second.to_pylist() == whole


def test_grouped_pages_follow_the_grouped_columns(filled):
    store, *_ = filled
    q = "SELECT video_id, COUNT(*) FROM memories GROUP BY video_id LIMIT 2"
    first = execute(store, compile_sql(q)).to_pylist()
    rest = execute(store, compile_sql(q + " OFFSET 2")).to_pylist()
    ids = [r["video_id"] for r in first + rest]
    assert ids == sorted(ids) and len(ids) == 3  # default order: the grouped columns


def test_a_where_of_5000_terms_is_refused_with_the_limit_named():
    ors = " OR ".join(f"video_id = 'v{i}'" for i in range(5_000))
    for compile_ in (
        lambda: compile_sql(f"SELECT video_id FROM memories WHERE {ors}"),
        lambda: compile_where(ors),
    ):
        with pytest.raises(SqlError, match="5,000 conditions joined by AND/OR; at most 1,000"):
            compile_()
    values = ", ".join(f"'v{i}'" for i in range(10_001))
    with pytest.raises(SqlError, match="10,001 literal values; at most 10,000"):
        compile_where(f"video_id IN ({values})")
    nested = "(" * 300 + "t_start > 1" + ")" * 300
    with pytest.raises(SqlError, match="nested too deeply"):
        compile_where(nested)


def test_a_where_of_1000_terms_runs_in_lance(filled):
    """The limit itself works end to end: 1,000 OR terms compile and filter correctly."""
    store, news, sport = filled
    wanted = [news[0].video_id, sport[0].video_id]
    terms = [f"video_id = '{v}'" for v in wanted] + [f"video_id = 'x{i}'" for i in range(998)]
    q = compile_sql(f"SELECT video_id FROM memories WHERE {' OR '.join(terms)} LIMIT 100")
    assert set(execute(store, q)["video_id"].to_pylist()) == set(wanted)
