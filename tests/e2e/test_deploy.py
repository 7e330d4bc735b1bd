"""deploy/prefect.yaml as deploy/README.md deploys it: a real `prefect server start` on
127.0.0.1, a `process` work pool, a real worker, `prefect deploy --prefect-file ... --all`,
then the ingest deployment triggered with per-run parameter overrides (a local folder, a
local LanceDB, a local Ray) as an operator's trial run would be."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from schemas.config import StorageConfig
from storage.catalog import Catalog
from storage.memories import MemoryStore

from ..conftest import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
INGEST = "vmem-ingest/nightly-archive-ingest"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _prefect(*args: str, env: dict, timeout: float = 120, check: bool = True):
    """One `prefect` CLI command, as an operator types it (from the repo root)."""
    result = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _stop(process: subprocess.Popen) -> None:
    """Stop a process this test started, with the children it started (its own group)."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def _wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert server.poll() is None, "prefect server exited"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"prefect server not healthy after {timeout_s} s")


@pytest.fixture(scope="module")
def prefect_deployed(tmp_path_factory):
    """Server, work pool, worker and the deployments of deploy/prefect.yaml, all real."""
    tmp = tmp_path_factory.mktemp("prefect-deploy")
    api = f"http://127.0.0.1:{free_port()}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # the nightly cron must not fire during a test: runs here are triggered by hand
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    port = api.split(":")[-1].split("/")[0]
    started: list[subprocess.Popen] = []
    logs = tmp / "logs"
    logs.mkdir()

    def start(name: str, *args: str) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "prefect", *args],
            cwd=tmp,  # not the repo: the flow runs find the code as the installed package
            env=env,
            stdout=(logs / f"{name}.log").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started.append(process)
        return process

    try:
        server = start("server", "server", "start", "--host", "127.0.0.1", "--port", port)
        _wait_healthy(api, server)
        _prefect("work-pool", "create", "vmem", "--type", "process", env=env)
        worker = start("worker", "worker", "start", "--pool", "vmem", "--type", "process")
        deployed = _prefect("deploy", "--prefect-file", "deploy/prefect.yaml", "--all", env=env)
        assert worker.poll() is None, (logs / "worker.log").read_text()
        yield {"env": env, "deploy_output": deployed.stdout, "logs": logs}
    finally:
        for process in reversed(started):
            _stop(process)


def _run_deployment(env: dict, source: Path, config: dict, timeout_s: int = 150):
    """`prefect deployment run` with per-run parameters; the run's final state."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    result = _prefect(
        "deployment",
        "run",
        INGEST,
        "--param",
        f"source={json.dumps(str(source))}",
        "--param",
        f"config={json.dumps(config)}",
        "--watch",
        "--watch-timeout",
        str(timeout_s),
        env=env,
        timeout=timeout_s + 30,
        check=False,
    )
    match = UUID.search(result.stdout)
    assert match, result.stdout + result.stderr
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            return client.read_flow_run(match.group(0)).state


def _trial_config(tmp: Path, model_cache: Path) -> dict:
    """The per-run `config` parameter of a trial run on one machine."""
    return {
        "storage": {"db": str(tmp / "db"), "commit_videos": 2},
        "model": {"untrained": True, "cache_dir": str(model_cache)},
        "encode": {"batch_videos": 2, "num_decoders": 1},
        "ray": {"address": None, "num_cpus": 2},
    }


def test_the_deployments_register_as_written(prefect_deployed):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    env = prefect_deployed["env"]
    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        with get_client(sync_client=True) as client:
            ingest = client.read_deployment_by_name(INGEST)
            client.read_deployment_by_name("vmem-answer/question-batch")
            pool = client.read_work_pool("vmem")
    assert pool.type == "process"
    assert ingest.work_pool_name == "vmem"
    assert [s.schedule.cron for s in ingest.schedules] == ["0 2 * * *"]
    assert ingest.global_concurrency_limit.limit == 1  # one run at a time on its database
    assert ingest.concurrency_options.collision_strategy == "ENQUEUE"
    assert ingest.entrypoint == "flows.ingest.ingest_flow" and not ingest.pull_steps
    assert ingest.parameters["config"]["ray"] == {"address": "auto"}


def test_a_triggered_ingest_run_completes_with_every_video_done(
    prefect_deployed, tmp_path, model_cache
):
    from world.samples import write_synthetic_video

    source = tmp_path / "archive"
    for seed, name in enumerate(("one.mp4", "two.mp4")):
        write_synthetic_video(source / "clips" / name, 3.0, seed=seed)
    config = _trial_config(tmp_path, model_cache)

    state = _run_deployment(prefect_deployed["env"], source, config)

    worker_log = (prefect_deployed["logs"] / "worker.log").read_text()
    assert state.is_completed(), f"{state.name}: {state.message}\n{worker_log[-3000:]}"
    assert "fork support is experimental" not in worker_log  # quiet flow runs and workers
    rows = Catalog(MemoryStore(StorageConfig(db=config["storage"]["db"]))).all().to_pylist()
    assert sorted(Path(r["uri"]).name for r in rows) == ["one.mp4", "two.mp4"]
    assert {r["status"] for r in rows} == {"done"}
    assert all(r["n_clips"] > 0 for r in rows)


def test_a_run_with_a_newly_failed_video_ends_failed(prefect_deployed, tmp_path, model_cache):
    from world.samples import write_synthetic_video

    source = tmp_path / "archive"
    write_synthetic_video(source / "good.mp4", 2.0, seed=3)
    (source / "broken.mp4").write_bytes(b"not a video at all")
    config = _trial_config(tmp_path, model_cache)

    state = _run_deployment(prefect_deployed["env"], source, config)

    assert state.is_failed(), f"{state.name}: {state.message}"  # an alert on Failed fires
    rows = Catalog(MemoryStore(StorageConfig(db=config["storage"]["db"]))).all().to_pylist()
    status = {Path(r["uri"]).name: r["status"] for r in rows}
    assert status == {"good.mp4": "done", "broken.mp4": "failed"}  # the rest went on
