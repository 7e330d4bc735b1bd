"""Ingest a folder of real videos (and bad files) end to end, then ask, search and re-run."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import lance
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from cli.app import app
from flows.answer import answer_flow
from flows.ingest import run_ingest
from storage.uri import join

from .conftest import expected_clips

pytestmark = pytest.mark.e2e

BAD_KINDS = {"zero", "text", "random", "audio", "moov", "faststart"}  # one file each


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, prefect_harness, ray_local, make_config, mixed_archive):
    db = tmp_path_factory.mktemp("db") / "vmem"
    cfg = make_config(db)
    report = run_ingest(str(mixed_archive), cfg)
    return cfg, report


def _config_file(cfg) -> str:
    """The ingest's config as a file, so CLI queries use the same (untrained) model."""
    path = Path(cfg.storage.db).parent / "vmem.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return str(path)


def _status(cfg) -> list[dict]:
    result = CliRunner().invoke(app, ["status", "--db", cfg.storage.db, "--json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def _memories(cfg):
    return lance.dataset(join(cfg.storage.db, "memories.lance")).to_table(
        columns=["video_id", "clip_index", "encoder", "t_start", "t_end", "uri"]
    )


def test_good_videos_done_and_bad_ones_failed_with_named_errors(
    ingested, good_videos, mixed_archive
):
    cfg, report = ingested
    bad = sorted(p.name for p in (mixed_archive / "bad").iterdir())
    assert all(any(kind in name for name in bad) for kind in BAD_KINDS), bad
    rows = {row["uri"].rsplit("/", 1)[-1]: row for row in _status(cfg)}
    assert set(rows) == set(good_videos) | set(bad)
    for name in good_videos:
        assert rows[name]["status"] == "done", rows[name]
        assert rows[name]["error"] in (None, "")
    for name in bad:
        assert rows[name]["status"] == "failed", rows[name]
        assert name in rows[name]["error"], rows[name]["error"]
    assert report.done == len(good_videos) and report.failed == len(bad)


def test_clip_rows_match_durations(ingested):
    cfg, _ = ingested
    bound_t = 16  # the default model's clip length
    rows = [r for r in _status(cfg) if r["status"] == "done"]
    per_video = Counter(_memories(cfg).column("video_id").to_pylist())
    for row in rows:
        want = expected_clips(row["duration_s"], cfg.decode.sample_fps, bound_t)
        assert row["n_clips"] == want, row
        assert per_video[row["video_id"]] == want, row


def test_time_ranges_cover_each_video_in_order(ingested):
    cfg, _ = ingested
    table = _memories(cfg).to_pylist()
    durations = {r["video_id"]: r["duration_s"] for r in _status(cfg)}
    by_video: dict[str, list[dict]] = {}
    for row in table:
        by_video.setdefault(row["video_id"], []).append(row)
    for video_id, rows in by_video.items():
        rows.sort(key=lambda r: r["clip_index"])
        assert [r["clip_index"] for r in rows] == list(range(len(rows)))
        assert rows[0]["t_start"] == pytest.approx(0.0, abs=0.05)
        for a, b in zip(rows, rows[1:], strict=False):
            assert a["t_end"] == pytest.approx(b["t_start"], abs=1e-3)
        assert rows[-1]["t_end"] == pytest.approx(durations[video_id], abs=1.05)


def test_ask_returns_time_ranged_clips_in_time_order(ingested):
    cfg, _ = ingested
    result = CliRunner().invoke(
        app,
        ["ask", "a red circle moving left", "--config", _config_file(cfg), "-k", "2", "--json"],
    )
    assert result.exit_code == 0, result.output
    clips = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert clips, "a question over a non-empty archive selects memories"
    per_video: dict[str, list[dict]] = {}
    for clip in clips:
        assert clip["t_end"] > clip["t_start"] >= 0
        per_video.setdefault(clip["video_id"], []).append(clip)
    for video_clips in per_video.values():
        assert len(video_clips) <= 2
        starts = [c["t_start"] for c in video_clips]
        assert starts == sorted(starts)


def test_ask_where_prefilter_restricts_clips(ingested):
    cfg, _ = ingested
    result = CliRunner().invoke(
        app,
        ["ask", "anything", "--config", _config_file(cfg), "--where", "t_start >= 16", "--json"],
    )
    assert result.exit_code == 0, result.output
    clips = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert clips and all(c["t_start"] >= 16 for c in clips)


def test_sql_round_trip_with_relevance_and_filter(ingested):
    cfg, _ = ingested
    statement = (
        "SELECT video_id, t_start, t_end, score FROM memories "
        "WHERE t_start < 20 ORDER BY relevance('bikes on a road') LIMIT 5"
    )
    result = CliRunner().invoke(app, ["sql", statement, "--config", _config_file(cfg), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert 0 < len(rows) <= 5
    assert all(r["t_start"] < 20 for r in rows)
    scores = [r["score"] for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_bad_sql_is_refused_and_changes_nothing(ingested):
    cfg, _ = ingested
    before = _memories(cfg).num_rows
    for statement, named in [
        ("SELEC video_id FROM memories", "syntax"),
        ("SELECT nope FROM memories", "nope"),
        ("DELETE FROM memories", "SELECT"),
        ("SELECT video_id FROM memories; DROP TABLE memories", "one statement"),
        ("SELECT m.video_id FROM memories m JOIN videos v ON m.video_id = v.video_id", "join"),
    ]:
        result = CliRunner().invoke(app, ["sql", statement, "--db", cfg.storage.db])
        assert result.exit_code == 2, (statement, result.output)
        assert named.lower() in result.output.lower(), (statement, result.output)
    assert _memories(cfg).num_rows == before


def test_answer_batch_writes_parquet_readable_by_duckdb(ingested, tmp_path):
    cfg, _ = ingested
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        '{"id": "q1", "question": "where is the bunny?"}\n'
        '{"question": "people on bikes", "where": "t_start >= 0", "k": 2}\n'
        "this line is not json\n"
        '{"question": "bad filter", "where": "nope = 1"}\n'
    )
    out = tmp_path / "results.parquet"
    report = answer_flow(str(questions), str(out), cfg)
    assert report.questions == 4 and report.failed == 2
    rows = duckdb.sql(f"SELECT * FROM '{out}'").fetchall()
    table = pq.read_table(out).to_pylist()
    assert len(rows) == len(table) == report.rows
    q1 = [r for r in table if r["question_id"] == "q1"]
    assert q1 and all(r["error"] is None and r["t_end"] > r["t_start"] for r in q1)
    errors = {r["question_id"]: r["error"] for r in table if r["error"]}
    assert "questions.jsonl:3:" in errors["line-3"]
    assert "nope" in errors["line-4"]


def test_rerun_adds_nothing(ingested, mixed_archive):
    cfg, first = ingested
    before = _memories(cfg).num_rows
    report = run_ingest(str(mixed_archive), cfg)
    assert report.done == 0 and report.failed == 0
    assert (report.skipped, report.failed_before) == (first.done, first.failed)
    assert sorted(report.earlier_failures) == sorted(first.failures)
    assert _memories(cfg).num_rows == before


def test_ingest_publishes_a_markdown_report_artifact(ingested):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, report = ingested
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["vmem-ingest-report"]))
        )
    texts = [a.data for a in artifacts if f"| {report.done} | {report.failed} |" in a.data]
    assert texts, "the first ingest published its report"
    assert all(uri in texts[0] for uri, _ in report.failures)


def test_http_api_serves_sql_and_questions_with_clear_400s(ingested):
    """The service's app in-process over the ingested archive (service/; the Serve
    deployment itself: tests/e2e/test_service.py)."""
    from fastapi.testclient import TestClient

    from actors.query import QueryStage
    from actors.runtime import bind_model
    from service.app import create_app
    from service.auth import KeyStore

    cfg, _ = ingested
    bound = bind_model(cfg)
    keys = KeyStore(cfg.storage)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    client = TestClient(create_app(stage, cfg.service, keys))
    auth = {"Authorization": f"Bearer {keys.create('read').key}"}
    query = "SELECT video_id, t_start, score FROM memories ORDER BY relevance('a bike') LIMIT 3"
    ok = client.post("/v1/sql", json={"query": query}, headers=auth)
    assert ok.status_code == 200, ok.text
    assert ok.json()["columns"] == ["video_id", "t_start", "score"] and len(ok.json()["rows"]) == 3
    bad = client.post("/v1/sql", json={"query": "DROP TABLE memories"}, headers=auth)
    assert bad.status_code == 400 and "SELECT" in bad.json()["error"]["message"]
    asked = client.post("/v1/search", json={"question": "a bunny", "k": 2}, headers=auth)
    assert asked.status_code == 200 and asked.json()["videos"]
    assert all(len(video["clips"]) <= 2 for video in asked.json()["videos"])
    bad_filter = client.post(
        "/v1/search", json={"question": "x", "where": "nope > 1"}, headers=auth
    )
    assert bad_filter.status_code == 400 and "nope" in bad_filter.json()["error"]["message"]
    assert client.post("/v1/search", json={"question": ""}, headers=auth).status_code == 422


def test_batched_selection_equals_one_question_at_a_time(ingested):
    from actors.query import QueryStage
    from actors.runtime import bind_model
    from schemas.records import Question

    cfg, _ = ingested
    bound = bind_model(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    questions = [
        Question(question="a bunny"),
        Question(question="bikes", where="t_start >= 16", k=1),
        Question(question="a phone call"),
        Question(question="broken", where="nope = 1"),
    ]
    together = stage.select(questions)
    alone = [stage.select([q])[0] for q in questions]
    for a, b in zip(together, alone, strict=True):
        assert [(c.video_id, c.clip_index) for c in a.clips] == [
            (c.video_id, c.clip_index) for c in b.clips
        ]
        assert [c.score for c in a.clips] == pytest.approx([c.score for c in b.clips], abs=1e-5)
        assert (a.error is None) == (b.error is None)
    assert together[0].clips and together[3].error is not None
