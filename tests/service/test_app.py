"""The endpoints over the tiny database, in-process: search (paged by video, with and
without the answer), SQL paging, the catalog, health, metrics, and JSON errors that never
show the server's paths."""

from __future__ import annotations

import pytest

from actors.query import QueryStage
from checkpoints.registry import resolve_checkpoint
from schemas.config import ServiceConfig, StorageConfig
from schemas.records import Question
from service.app import create_app
from service.auth import KeyStore

from .conftest import ARCHIVE, CLIPS, FAILED, make_service

QUESTION = "where does the red circle move?"


def _search(service, **body):
    return service.client.post(
        "/v1/search", json={"question": QUESTION, **body}, headers=service.read
    )


def _no_server_paths(text: str) -> None:
    assert ARCHIVE not in text and "/srv" not in text and "Traceback" not in text


def test_search_gives_each_video_its_clips_in_time_order_without_server_paths(service):
    response = _search(service, k=2)
    assert response.status_code == 200, response.text
    _no_server_paths(response.text)
    body = response.json()
    assert body["answer"] is None  # not asked
    stage = QueryStage(
        service.db.checkpoint, service.db.encoder, service.db.cfg.storage, service.db.cfg.query
    )
    (direct,) = stage.select([Question(question=QUESTION, k=2)])
    want = [c.video_id for c in direct.clips]
    assert [v["video_id"] for v in body["videos"]] == list(dict.fromkeys(want))[:2]  # page 1
    names = {uri.rsplit("/", 1)[-1]: uri for uri in CLIPS}
    for video in body["videos"]:
        assert 1 <= len(video["clips"]) <= 2
        starts = [c["t_start"] for c in video["clips"]]
        assert starts == sorted(starts)
        assert video["score"] == max(c["score"] for c in video["clips"])
        raw = names[video["name"]]
        assert video["uri"] == (raw if raw.startswith("s3://") else video["name"])
        for clip in video["clips"]:
            url = f"/v1/clips/{video['video_id']}/{clip['clip_index']}/thumbnail.jpg"
            assert clip["thumbnail_url"] == url


def test_search_pages_by_video_and_answers_once_on_the_first_page(service):
    first = _search(service, answer=True)
    assert first.status_code == 200, first.text
    page1 = first.json()
    assert isinstance(page1["answer"], str) and page1["answer"]
    assert "answer" not in page1["videos"][0]  # once per question, not per row
    assert len(page1["videos"]) == 2 and page1["next_page_token"]
    second = _search(service, answer=True, page_token=page1["next_page_token"])
    page2 = second.json()
    assert second.status_code == 200 and page2["answer"] is None
    assert page2["next_page_token"] is None
    every = [v["video_id"] for v in page1["videos"] + page2["videos"]]
    assert sorted(every) == sorted(service.db.video_ids[uri] for uri in CLIPS)
    # a token is bound to its question
    other = _search(service, question="something else", page_token=page1["next_page_token"])
    assert other.status_code == 400 and other.json()["error"]["code"] == "invalid_page_token"


def test_answer_without_an_answerer_is_a_clear_400(tiny_db, tmp_path):
    untrained = str(resolve_checkpoint(None, 0, tmp_path / "models", trained=False))
    stage = QueryStage(untrained, tiny_db.encoder, tiny_db.cfg.storage, tiny_db.cfg.query)
    keys = KeyStore(tiny_db.cfg.storage)
    from fastapi.testclient import TestClient

    client = TestClient(create_app(stage, ServiceConfig(), keys))
    headers = {"Authorization": f"Bearer {keys.create('read').key}"}
    response = client.post("/v1/search", json={"question": "q", "answer": True}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "no_answerer",
        "message": "this model has no answerer (train one with `vmem train`)",
    }


def test_sql_pages_concatenate_to_the_whole_result(service):
    query = "SELECT video_id, clip_index, uri, t_start FROM memories ORDER BY t_start LIMIT 5"
    rows, token, pages = [], None, 0
    while True:
        body = {"query": query} | ({"page_token": token} if token else {})
        response = service.client.post("/v1/sql", json=body, headers=service.read)
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["columns"] == ["video_id", "clip_index", "uri", "t_start"]
        assert len(page["rows"]) <= 2  # page_size
        rows += page["rows"]
        pages += 1
        token = page["next_page_token"]
        if token is None:
            break
    assert pages == 3 and len(rows) == 5
    _no_server_paths(str(rows))
    stage = QueryStage(
        service.db.checkpoint, service.db.encoder, service.db.cfg.storage, service.db.cfg.query
    )
    want = stage.sql(query).to_pylist()
    assert [(r["video_id"], r["clip_index"]) for r in rows] == [
        (r["video_id"], r["clip_index"]) for r in want
    ]
    assert [r["uri"] for r in rows] == [
        r["uri"].rsplit("/", 1)[-1] if r["uri"].startswith("/") else r["uri"] for r in want
    ]


@pytest.mark.parametrize(
    "query, words",
    [
        ("DROP TABLE memories", "SELECT"),
        ("SELECT nope FROM memories", "nope"),
        ("SELECT * FROM memories WHERE t_start = 'abc'", "abc"),  # Lance's own type error
    ],
)
def test_bad_sql_is_a_400_naming_the_problem_without_internals(service, query, words):
    response = service.client.post("/v1/sql", json={"query": query}, headers=service.read)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_sql" and words in error["message"]
    assert ".rs:" not in error["message"] and "\n" not in error["message"]
    _no_server_paths(response.text)


def test_videos_are_listed_a_page_at_a_time_and_by_status(service):
    seen, token = [], None
    while True:
        params = {"page_token": token} if token else {}
        page = service.client.get("/v1/videos", params=params, headers=service.read).json()
        seen += page["videos"]
        token = page["next_page_token"]
        if token is None:
            break
    assert sorted(v["video_id"] for v in seen) == sorted(service.db.video_ids.values())
    assert all("etag" not in v and "archive" not in v for v in seen)
    failed = service.client.get("/v1/videos?status=failed", headers=service.read).json()
    (broken,) = failed["videos"]
    assert broken["status"] == "failed" and broken["name"] == "broken.mp4"
    assert broken["error"] == "decode: broken.mp4 is not a video (moov atom not found)"
    bad = service.client.get("/v1/videos?status=nope", headers=service.read)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    _no_server_paths(str(seen))


def test_one_video_or_a_json_404(service):
    video_id = service.db.video_ids[FAILED]
    one = service.client.get(f"/v1/videos/{video_id}", headers=service.read)
    assert one.status_code == 200 and one.json()["video_id"] == video_id
    _no_server_paths(one.text)
    missing = service.client.get("/v1/videos/0000000000000000", headers=service.read)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "video_not_found"


def test_routing_and_validation_errors_are_json_and_do_not_echo_input(service):
    client, headers = service.client, service.read
    for response, code in [
        (client.get("/v2/search", headers=headers), "not_found"),
        (client.get("/docs"), "not_found"),
        (client.delete("/v1/videos", headers=headers), "method_not_allowed"),
        (client.post("/v1/search", json={"question": ""}, headers=headers), "invalid_request"),
        (client.post("/v1/search", content=b"{not json", headers=headers), "invalid_request"),
        (
            client.post("/v1/search", json={"question": "x", "k": 0}, headers=headers),
            "invalid_request",
        ),
    ]:
        assert response.json()["error"]["code"] == code, response.text
    secret = "s" * 5_000
    echoed = client.post("/v1/search", json={"question": "q", secret: 1}, headers=headers)
    assert echoed.status_code == 422 and len(echoed.text) < 400 and secret not in echoed.text
    long = client.post("/v1/search", json={"question": "x" * 3000}, headers=headers)
    assert long.status_code == 422 and "x" * 100 not in long.text


def test_an_empty_database_is_a_503_that_says_so_not_a_500(tiny_db, tmp_path):
    storage = StorageConfig(db=str(tmp_path / "empty"))
    stage = QueryStage(tiny_db.checkpoint, tiny_db.encoder, storage, tiny_db.cfg.query)
    keys = KeyStore(storage)
    from fastapi.testclient import TestClient

    client = TestClient(create_app(stage, ServiceConfig(), keys))
    headers = {"Authorization": f"Bearer {keys.create('read').key}"}
    health = client.get("/healthz")
    assert health.status_code == 503 and "ingest" in health.json()["error"]["message"]
    sql = client.post("/v1/sql", json={"query": "SELECT * FROM memories"}, headers=headers)
    assert sql.status_code == 503 and sql.json()["error"]["code"] == "storage_unavailable"
    search = client.post("/v1/search", json={"question": "q"}, headers=headers)
    assert search.status_code == 503
    for response in (health, sql, search):
        assert str(tmp_path) not in response.text
    assert client.get("/v1/videos", headers=headers).json() == {
        "videos": [],
        "next_page_token": None,
    }


class _BrokenStage:
    """A stage whose selection fails in a way nobody planned for."""

    checkpoint, encoder = "/nowhere/model", "x@1"
    storage_cfg = StorageConfig(db="/secret/db")
    model = object()

    def setup(self):
        pass

    def select(self, questions):
        raise KeyError("boom at /secret/db/memories.lance")


def test_an_unexpected_error_is_a_json_500_that_says_nothing_internal(tiny_db):
    from fastapi.testclient import TestClient

    keys = KeyStore(tiny_db.cfg.storage)
    app = create_app(_BrokenStage(), ServiceConfig(), keys)
    client = TestClient(app, raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {keys.create('read').key}"}
    response = client.post("/v1/search", json={"question": "q"}, headers=headers)
    assert response.status_code == 500
    assert response.json() == {
        "error": {"code": "internal", "message": "internal error (logged on the server)"}
    }


def test_healthz_needs_no_key_and_metrics_count_requests_by_endpoint(tiny_db):
    service = make_service(tiny_db)
    client = service.client
    health = client.get("/healthz")
    assert health.status_code == 200 and health.json() == {
        "status": "ok",
        "encoder": tiny_db.encoder,
    }
    assert _search(service).status_code == 200
    assert client.get("/v1/videos/ffffffffffffffff", headers=service.read).status_code == 404
    assert client.get("/metrics").status_code == 401
    text = client.get("/metrics", headers=service.read).text
    assert 'vmem_http_requests_total{endpoint="/v1/search",method="POST",status="200"} 1.0' in text
    assert (
        'vmem_http_requests_total{endpoint="/v1/videos/{video_id}",method="GET",status="404"} 1.0'
        in text
    )
    assert 'vmem_http_errors_total{code="missing_key"} 1.0' in text
    assert "vmem_selection_seconds_count 1.0" in text
    assert 'vmem_http_request_seconds_count{endpoint="/v1/search"} 1.0' in text


def test_openapi_lists_the_v1_endpoints_behind_a_key(service):
    assert service.client.get("/v1/openapi.json").status_code == 401
    document = service.client.get("/v1/openapi.json", headers=service.read).json()
    assert set(document["paths"]) == {
        "/healthz",
        "/v1/search",
        "/v1/sql",
        "/v1/videos",
        "/v1/videos/{video_id}",
        "/v1/clips/{video_id}/{clip_index}/thumbnail.jpg",
        "/v1/clips/{video_id}/{clip_index}/segment.mp4",
        "/v1/batches",
        "/v1/batches/{batch_id}",
        "/v1/batches/{batch_id}/results",
    }
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def _all_pages(service, query: str) -> tuple[list[dict], int]:
    rows, token, pages = [], None, 0
    while True:
        body = {"query": query} | ({"page_token": token} if token else {})
        response = service.client.post("/v1/sql", json=body, headers=service.read)
        assert response.status_code == 200, response.text
        rows += response.json()["rows"]
        pages += 1
        token = response.json()["next_page_token"]
        if token is None:
            return rows, pages


def test_sql_without_limit_lists_every_row_and_aggregates_page_too(service):
    everything = sum(CLIPS.values())
    rows, pages = _all_pages(service, "SELECT video_id, clip_index FROM memories")
    assert len(rows) == everything and pages == 5  # page_size 2
    assert len({(r["video_id"], r["clip_index"]) for r in rows}) == everything
    skipped, _ = _all_pages(service, "SELECT video_id, clip_index FROM memories OFFSET 3")
    assert len(skipped) == everything - 3
    groups, pages = _all_pages(
        service, "SELECT video_id, COUNT(*) AS n FROM memories GROUP BY video_id ORDER BY n DESC"
    )
    assert pages == 2 and [g["n"] for g in groups] == sorted(CLIPS.values(), reverse=True)


def test_the_results_page_needs_no_key_and_calls_only_routes_that_exist(service):
    """The page holds no data (it asks for a key and sends it as a Bearer token); the
    browser test that drives it is not written yet (issue 21)."""
    import re

    page = service.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "img-src blob:" in page.headers["content-security-policy"]
    html = page.text
    assert 'id="question"' in html and 'id="where"' in html and 'id="key"' in html
    assert "Authorization" in html and "sessionStorage" in html  # the key never goes in a URL
    document = service.client.get("/v1/openapi.json", headers=service.read).json()
    called = set(re.findall(r'"(/v1/[a-z]+)"', html))
    assert called == {"/v1/search"}
    assert called <= set(document["paths"])
    # the clip routes the page builds for neighbours are the thumbnail route's shape
    assert '"/v1/clips/"' in html and '"/thumbnail.jpg"' in html
    assert "/v1/clips/{video_id}/{clip_index}/thumbnail.jpg" in document["paths"]
