"""S3 faults: the server stopped mid-run, an endpoint with no server, and credentials that
never show. Real parts: moto's S3 app on loopback (stopped for real: its socket closed), the
`vmem` CLI (a subprocess on the test's Ray and Prefect API; Typer's runner where no flow
runs), Ray, Prefect's harness, LanceDB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter
from pathlib import Path

import boto3
import pytest
import yaml
from typer.testing import CliRunner

from cli.app import EXIT_STORAGE, app
from flows.ingest import run_ingest
from schemas.config import load_config
from storage.catalog import Catalog
from storage.memories import MemoryStore

from ..conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
N_VIDEOS = 4
HALT_AT = "videos/v2.mp4"  # the server stops when the run first reads this object
SECRET = f"fault-secret-{uuid.uuid4().hex}"  # moto accepts any keys
KEY_ID = f"AKIDFAULT{uuid.uuid4().hex[:8].upper()}"


class StoppableS3:
    """moto's S3 app served on a loopback port, stopped for real (socket closed, so clients
    are refused) by ``stop()``, or by the server itself at the first request for
    ``halt_on``: that request and any before the socket closes get a 503."""

    def __init__(self, port: int, halt_on: str | None = None) -> None:
        self.port, self.halt_on = port, halt_on
        self.endpoint = f"http://127.0.0.1:{port}"
        self.halted = threading.Event()
        self._server = None

    def start(self) -> StoppableS3:
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        app = DomainDispatcherApplication(create_backend_app)

        def serve(environ, start_response):
            reading = environ.get("REQUEST_METHOD") in ("GET", "HEAD")
            if reading and self.halt_on and environ.get("PATH_INFO", "").endswith(self.halt_on):
                if not self.halted.is_set():
                    self.halted.set()
                    threading.Thread(target=self.stop, daemon=True).start()
            if self.halted.is_set():
                start_response("503 Service Unavailable", [("Content-Length", "0")])
                return [b""]
            return app(environ, start_response)

        self._server = make_server(
            "127.0.0.1", self.port, serve, threaded=True, request_handler=MotoRequestHandler
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            server.shutdown()
            server.server_close()  # refuse connections, as a stopped server does


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory) -> list[Path]:
    from world.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("faults")
    return [write_synthetic_video(root / f"v{i}.mp4", 3.0, seed=70 + i) for i in range(N_VIDEOS)]


@pytest.fixture
def servers():
    """Factory: ``start(port) -> StoppableS3``; every server started is stopped at the end."""
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    started: list[StoppableS3] = []

    def start(port: int) -> StoppableS3:
        started.append(StoppableS3(port).start())
        return started[-1]

    yield start
    for server in started:
        server.stop()


def upload(endpoint: str, videos: list[Path]) -> str:
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
    )
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    client.create_bucket(Bucket=bucket)
    for path in videos:
        client.upload_file(str(path), bucket, f"videos/{path.name}")
    return bucket


def write_config(path: Path, db: str, endpoint: str, model_cache: Path, retries: int = 2) -> Path:
    options = {
        "aws_endpoint": endpoint,
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
        "aws_region": "us-east-1",
        "client_max_retries": str(retries),
    }
    storage = {"db": db, "storage_options": options, "commit_videos": 1, "writer_lease_s": 4}
    path.write_text(
        yaml.safe_dump(
            {
                "storage": storage,
                "model": {"cache_dir": str(model_cache), "untrained": True},
                "encode": {"batch_videos": 1, "num_decoders": 1},
                "retry": {"task_retries": 0},
                "ray": {"address": ray_address()},
            }
        )
    )
    return path


def ray_address() -> str | None:
    import ray

    return ray.get_runtime_context().gcs_address if ray.is_initialized() else None


def vmem(*args: str):
    """`vmem ARGS` in this process (Typer's runner): for commands that run no flow."""
    return CliRunner().invoke(app, list(args))


def vmem_ingest(*args: str) -> tuple[int, str]:
    """`vmem ingest ARGS` in a subprocess (the real entry point and exit code), a client of
    the harness's Prefect API and a driver of the test's Ray: (exit code, output)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = subprocess.run(
        [sys.executable, "-m", "cli.app", "ingest", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    return done.returncode, done.stdout + done.stderr


def clip_keys(cfg) -> list[tuple[str, int]]:
    table = MemoryStore(cfg.storage).table.search().select(["video_id", "clip_index"])
    return [(r["video_id"], r["clip_index"]) for r in table.limit(None).to_arrow().to_pylist()]


def assert_complete(cfg, rows: list[dict]) -> None:
    keys = clip_keys(cfg)
    assert len(keys) == len(set(keys)), "duplicate clip rows"
    for row in rows:
        indices = sorted(k[1] for k in keys if k[0] == row["video_id"])
        assert indices == list(range(row["n_clips"])), f"missing clips of {row['uri']}"


def prefect_records() -> str:
    """The ingest artifacts and flow-run parameters Prefect stored, as one text."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        artifacts = [a.data for a in client.read_artifacts()]
        runs = [r.parameters for r in client.read_flow_runs()]
    assert any("VMem ingest of" in str(a) for a in artifacts)
    return json.dumps([artifacts, runs], default=str)


def test_archive_server_stopped_mid_run_then_retry_failed_completes(
    tmp_path, tiny_videos, servers, model_cache, prefect_harness, ray_local, capfd
):
    port = free_port()
    s3 = servers(port)
    bucket = upload(s3.endpoint, tiny_videos)
    s3.halt_on = HALT_AT  # armed: the run's first read of it stops the server
    config = write_config(tmp_path / "vmem.yaml", str(tmp_path / "db"), s3.endpoint, model_cache)
    cfg, source = load_config(config), f"s3://{bucket}/videos"

    first = run_ingest(source, cfg)  # in this process; `vmem ingest` exits 3 on new failures
    assert s3.halted.is_set(), "the server was never stopped"
    output = "\n".join(f"{uri}: {error}" for uri, error in first.failures)
    rows = {r["uri"]: r for r in Catalog(MemoryStore(cfg.storage)).all().to_pylist()}
    assert len(rows) == N_VIDEOS and rows[f"s3://{bucket}/{HALT_AT}"]["status"] == "failed"
    failed = [r for r in rows.values() if r["status"] == "failed"]
    done = [r for r in rows.values() if r["status"] == "done"]
    assert done and len(done) + len(failed) == N_VIDEOS
    assert (first.done, first.failed) == (len(done), len(failed))
    for row in failed:  # the endpoint and the object, on one line
        assert f"cannot reach s3 endpoint {s3.endpoint} for {row['uri']}" in row["error"]
        assert row["uri"] in output
    assert_complete(cfg, done)

    servers(port)  # the server is back: same endpoint, same objects
    report = run_ingest(source, cfg, retry_failed=True)
    assert (report.done, report.failed) == (len(failed), 0)  # `vmem ingest` exits 0 on this
    after = {r["uri"]: r for r in Catalog(MemoryStore(cfg.storage)).all().to_pylist()}
    assert all(r["status"] == "done" for r in after.values())
    assert all(after[r["uri"]]["attempts"] == 1 for r in done)  # committed: not redone
    assert all(after[r["uri"]]["attempts"] == 2 for r in failed)
    assert_complete(cfg, list(after.values()))

    status = vmem("status", "--config", str(config), "--json")
    assert status.exit_code == 0, status.output
    seen = output + status.output + str(capfd.readouterr())
    seen += json.dumps(Catalog(MemoryStore(cfg.storage)).all().to_pylist(), default=str)
    seen += prefect_records()
    assert SECRET not in seen and KEY_ID not in seen


def test_db_server_stopped_mid_run_exits_nonzero_and_loses_nothing(
    tmp_path, tiny_videos, servers, model_cache, prefect_harness, ray_local
):
    port = free_port()
    s3 = servers(port)
    bucket = upload(s3.endpoint, tiny_videos)
    s3.halt_on = HALT_AT
    db = f"s3://{bucket}/db"
    config = write_config(tmp_path / "vmem.yaml", db, s3.endpoint, model_cache)
    cfg, source = load_config(config), f"s3://{bucket}/videos"

    code, output = vmem_ingest(source, "--config", str(config))
    assert s3.halted.is_set(), f"the server was never stopped: {output}"
    assert code == EXIT_STORAGE, output
    error = output.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot reach s3 endpoint {s3.endpoint} for {db}"), error
    assert SECRET not in output and KEY_ID not in output

    servers(port)
    committed = {r["video_id"]: r for r in Catalog(MemoryStore(cfg.storage)).all().to_pylist()}
    kept = Counter(k[0] for k in clip_keys(cfg))
    report = run_ingest(source, cfg, retry_failed=True)
    assert report.failed == 0
    after = Catalog(MemoryStore(cfg.storage)).all().to_pylist()
    assert len(after) == N_VIDEOS and all(r["status"] == "done" for r in after)
    for row in after:  # what the first run committed stayed as it was
        if committed.get(row["video_id"], {}).get("status") == "done":
            assert row["attempts"] == 1 and kept[row["video_id"]] == row["n_clips"]
    assert_complete(cfg, after)


def test_no_server_at_all_is_one_line_for_every_command(tmp_path, model_cache, capfd):
    endpoint = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "vmem.yaml", "s3://nowhere/db", endpoint, model_cache, 0)
    for args in (
        ["ingest", "s3://nowhere/videos"],
        ["status"],
        ["ask", "what happens?"],
        ["sql", "SELECT video_id FROM videos"],
    ):
        result = vmem(*args, "--config", str(config))
        assert result.exit_code == EXIT_STORAGE, (args, result.output)
        lines = result.output.strip().splitlines()
        assert lines == [f"error: cannot reach s3 endpoint {endpoint} for s3://nowhere/db "
                         "(connection refused)"], (args, result.output)  # fmt: skip
    printed = capfd.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert SECRET not in printed.out + printed.err
