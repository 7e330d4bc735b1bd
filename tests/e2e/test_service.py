"""The search service for real: a small archive ingested through Prefect and Ray, then
`service.serve.run_service` starts Ray Serve's HTTP proxy on loopback with the
deployment over it, and an HTTP client asks what an application would."""

from __future__ import annotations

import io
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pyarrow.parquet as pq
import pytest
from ray import serve
from typer.testing import CliRunner

from cli.app import app as cli
from flows.ingest import run_ingest
from schemas.config import ModelConfig, QueryConfig, ServiceConfig, StorageConfig, VMemConfig
from service.serve import run_service

from ..conftest import free_port

pytestmark = pytest.mark.e2e

BODY_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def served(tmp_path_factory, prefect_harness, ray_local, model_cache, good_videos):
    """(base URL, read key, ingest report) of the service over a freshly ingested archive:
    two videos and one broken file, the trained default (it has an answerer)."""
    root = tmp_path_factory.mktemp("served")
    archive = root / "archive"
    archive.mkdir()
    for name in ("short.mp4", "medium.mp4"):
        shutil.copy(good_videos[name], archive / name)
    (archive / "broken.mp4").write_text("not a video\n")
    cfg = VMemConfig(
        storage=StorageConfig(db=str(root / "db")),
        model=ModelConfig(cache_dir=str(model_cache)),
        query=QueryConfig(num_actors=1),
        service=ServiceConfig(
            port=free_port(),
            body_limit_bytes=BODY_LIMIT,
            page_size=2,
            replica_num_cpus=0.5,
            max_ongoing_requests=1,
            max_queued_requests=1,
            retry_after_s=2,
        ),
    )
    report = run_ingest(str(archive), cfg)
    made = CliRunner().invoke(cli, ["keys", "create", "--scope", "read", "--db", cfg.storage.db])
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    url = run_service(cfg)
    try:
        yield url, key, report, str(root)
    finally:
        serve.shutdown()


def test_the_served_api_end_to_end(served):
    url, key, report, root = served
    assert url.startswith("http://127.0.0.1:")
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=60) as client:
        health = client.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text

        refused = client.post("/v1/search", json={"question": "a yellow star"})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "missing_key"

        plain = client.post("/v1/search", json={"question": "a yellow star", "k": 2}, headers=auth)
        assert plain.status_code == 200, plain.text
        assert plain.json()["answer"] is None
        videos = plain.json()["videos"]
        assert {v["name"] for v in videos} <= {"short.mp4", "medium.mp4"} and videos
        assert all(1 <= len(v["clips"]) <= 2 for v in videos)
        answered = client.post(
            "/v1/search", json={"question": "how many red circles?", "answer": True}, headers=auth
        )
        assert answered.status_code == 200 and isinstance(answered.json()["answer"], str)

        query = "SELECT video_id, clip_index, t_start FROM memories ORDER BY t_start LIMIT 3"
        first = client.post("/v1/sql", json={"query": query}, headers=auth).json()
        assert len(first["rows"]) == 2 and first["next_page_token"]
        body = {"query": query, "page_token": first["next_page_token"]}
        second = client.post("/v1/sql", json=body, headers=auth).json()
        assert len(second["rows"]) == 1 and second["next_page_token"] is None
        assert report.clips >= 3

        page1 = client.get("/v1/videos", headers=auth).json()
        page2 = client.get(
            "/v1/videos", params={"page_token": page1["next_page_token"]}, headers=auth
        ).json()
        listed = page1["videos"] + page2["videos"]
        assert sorted(v["name"] for v in listed) == ["broken.mp4", "medium.mp4", "short.mp4"]
        (broken,) = [v for v in listed if v["status"] == "failed"]
        one = client.get(f"/v1/videos/{broken['video_id']}", headers=auth)
        assert one.status_code == 200 and "broken.mp4" in one.json()["error"]
        assert root not in str(listed) + one.text  # no server paths

        too_big = client.post(
            "/v1/search", json={"question": "q", "where": "x" * BODY_LIMIT}, headers=auth
        )
        assert too_big.status_code == 413
        assert too_big.json()["error"]["code"] == "body_too_large"

        metrics = client.get("/metrics", headers=auth)
        assert metrics.status_code == 200
        assert 'vmem_http_requests_total{endpoint="/v1/search",method="POST",status="200"}' in (
            metrics.text
        )


def test_a_full_queue_is_a_503_with_retry_after(served):
    """One request in flight and one queued per deployment (the fixture's limits): a burst
    of slow requests (answers) gets the rest refused at once."""
    url, key, _, _ = served
    auth = {"Authorization": f"Bearer {key}"}
    body = {"question": "which came first, the red circle or the blue star?", "answer": True}

    def ask(_):
        return httpx.post(f"{url}/v1/search", json=body, headers=auth, timeout=60)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(ask, range(8)))
    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    assert set(statuses) <= {200, 503}, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.headers["retry-after"] == "2"


def test_thumbnails_segments_and_a_batch_through_serve(served):
    """A clip's thumbnail and segment, and a batch run by the Prefect answer flow on the
    query actor pool from the replica, with a write key."""
    url, key, _, root = served
    made = CliRunner().invoke(cli, ["keys", "create", "--scope", "write", "--db", f"{root}/db"])
    assert made.exit_code == 0, made.output
    write = {"Authorization": f"Bearer {made.output.strip().splitlines()[-1]}"}
    read = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, timeout=60) as client:
        hit = client.post("/v1/search", json={"question": "a red circle"}, headers=read).json()
        clip = hit["videos"][0]["clips"][0]
        thumbnail = client.get(clip["thumbnail_url"], headers=read)
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"
        assert thumbnail.content[:2] == b"\xff\xd8"
        segment = client.get(clip["segment_url"], headers=read)
        assert segment.status_code == 200 and segment.headers["content-type"] == "video/mp4"

        questions = [{"question": "a red circle", "id": "r"}, {"question": "a star", "id": "s"}]
        refused = client.post("/v1/batches", json={"questions": questions}, headers=read)
        assert refused.status_code == 403
        sent = client.post("/v1/batches", json={"questions": questions}, headers=write)
        assert sent.status_code == 202, sent.text
        batch = sent.json()["batch_id"]
        deadline = time.monotonic() + 180
        state = {}
        while time.monotonic() < deadline:
            state = client.get(f"/v1/batches/{batch}", headers=read).json()
            if state["state"] in ("done", "failed"):
                break
            time.sleep(0.5)
        assert state["state"] == "done", state
        assert state["progress"] == {"done": 2, "total": 2} and state["failed"] == 0
        page = client.get(f"/v1/batches/{batch}/results", headers=read).json()
        assert len(page["rows"]) == 2 and page["next_page_token"]  # page_size 2
        whole = client.get(f"/v1/batches/{batch}/results?format=parquet", headers=read)
        table = pq.read_table(io.BytesIO(whole.content))
        assert set(table.column("question_id").to_pylist()) == {"r", "s"}
        assert table.num_rows == state["rows"]
