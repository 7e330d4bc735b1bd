"""The search service for real: a small archive ingested through Prefect and Ray, then
`service.serve.run_service` starts Ray Serve's HTTP proxy on loopback with the
deployment over it, and an HTTP client asks what an application would."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
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
