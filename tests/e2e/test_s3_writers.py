"""One writer per s3:// database: two `vmem ingest` processes at once, and a writer killed
while holding the lease.

Real parts: moto's S3 server on loopback, the real CLI in subprocesses (drivers of the test's
Ray cluster, clients of the test's Prefect API), LanceDB on S3, the S3 writer lease."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from actors.runtime import bind_model
from flows.ingest import run_ingest
from schemas.config import load_config
from storage.catalog import Catalog
from storage.lease import LeaseRecord, S3LeaseObject
from storage.memories import MemoryStore

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
VIDEOS = {"a/v0.mp4": 3.0, "a/v1.mp4": 4.0, "b/v2.mp4": 3.0, "b/v3.mp4": 5.0, "b/v4.mp4": 3.0}


@pytest.fixture(scope="module")
def tiny_videos(tmp_path_factory) -> dict[str, Path]:
    from world.samples import write_synthetic_video

    root = tmp_path_factory.mktemp("writers")
    return {
        key: write_synthetic_video(root / key, seconds, seed=40 + i)
        for i, (key, seconds) in enumerate(VIDEOS.items())
    }


@pytest.fixture
def archive(s3_client, s3_bucket, tiny_videos) -> str:
    bucket = s3_bucket("writers")
    for key, path in tiny_videos.items():
        s3_client.upload_file(str(path), bucket, f"videos/{key}")
    return bucket


def write_config(path: Path, bucket: str, s3_server, model_cache, lease_s: float) -> Path:
    options = {k: v for k, v in s3_server.items() if k != "endpoint"}
    path.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "db": f"s3://{bucket}/db",
                    "storage_options": options,
                    "commit_videos": 1,
                    "writer_lease_s": lease_s,
                    "writer_wait_s": 300,
                },
                "model": {"cache_dir": str(model_cache), "untrained": True},
                "encode": {"batch_videos": 2, "num_decoders": 1},
                "query": {"num_actors": 1},
                "ray": {"address": _ray_address()},
            }
        )
    )
    return path


def _ray_address() -> str:
    import ray

    return ray.get_runtime_context().gcs_address  # the test's own Ray, not another one


def start_ingest(source: str, config: Path, tmp_path: Path, name: str) -> subprocess.Popen:
    """`vmem ingest SOURCE` in a subprocess: a client of the harness's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PREFECT_API_URL": PREFECT_API_URL.value()}
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed by the OS at exit
    return subprocess.Popen(
        [sys.executable, "-m", "cli.app", "ingest", source, "--config", str(config)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def assert_each_video_once(cfg, expected: int) -> None:
    """Every video done exactly once (one catalog row, one attempt) with clips 0..n-1, each
    clip row exactly once."""
    catalog = Catalog(MemoryStore(cfg.storage)).all().to_pylist()
    assert len(catalog) == expected
    assert Counter(r["video_id"] for r in catalog).most_common(1)[0][1] == 1
    assert all(r["status"] == "done" and r["attempts"] == 1 for r in catalog), catalog
    memories = MemoryStore(cfg.storage).table.search().select(["video_id", "clip_index"])
    keys = [(r["video_id"], r["clip_index"]) for r in memories.limit(None).to_arrow().to_pylist()]
    assert len(keys) == len(set(keys)), "duplicate clip rows"
    for row in catalog:
        indices = sorted(k[1] for k in keys if k[0] == row["video_id"])
        assert indices == list(range(row["n_clips"])), f"missing clips of {row['uri']}"


def test_two_ingests_at_once_into_one_s3_db(
    tmp_path, archive, s3_server, model_cache, prefect_harness, ray_local
):
    config = write_config(tmp_path / "vmem.yaml", archive, s3_server, model_cache, lease_s=6)
    cfg = load_config(config)
    bind_model(cfg)  # build the model cache once, before two processes want it
    sources = [f"s3://{archive}/videos", f"s3://{archive}/videos/b"]  # b/ is in both
    procs = [start_ingest(s, config, tmp_path, f"run{i}") for i, s in enumerate(sources)]
    codes = [p.wait(timeout=400) for p in procs]
    logs = [(tmp_path / f"run{i}.log").read_text() for i in range(2)]
    assert codes == [0, 0], logs
    assert_each_video_once(cfg, len(VIDEOS))
    waited = [log for log in logs if "waiting for the writer lease of" in log]
    assert len(waited) == 1, logs  # the second run waited for the first one's lease
    assert f"s3://{archive}/db held by " in waited[0] and " until " in waited[0]
    lease = S3LeaseObject(cfg.storage.db, cfg.storage.storage_options).read()
    assert lease is not None and LeaseRecord.from_bytes(lease[0]).released


HOLDER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from schemas.config import load_config
from storage.lease import hold_writer
with hold_writer(load_config(sys.argv[2]).storage) as lease:  # as an ingest run holds it
    print(lease.holder, flush=True)
    time.sleep(600)
"""


def test_killed_writer_blocks_the_next_run_no_longer_than_its_lease(
    tmp_path, archive, s3_server, model_cache, prefect_harness, ray_local
):
    lease_s = 4.0
    config = write_config(tmp_path / "vmem.yaml", archive, s3_server, model_cache, lease_s)
    cfg = load_config(config)
    store = S3LeaseObject(cfg.storage.db, cfg.storage.storage_options)

    def holder() -> LeaseRecord | None:
        found = store.read()
        return LeaseRecord.from_bytes(found[0]) if found else None

    writer = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(ROOT), str(config)], stdout=subprocess.PIPE, text=True
    )
    dead_holder = writer.stdout.readline().strip()
    os.kill(writer.pid, signal.SIGKILL)  # the writer dies holding the lease
    writer.wait()
    killed_at, dead = time.time(), holder()
    assert dead is not None and dead.holder == dead_holder and f":{writer.pid}:" in dead_holder

    taken: list[float] = []  # when this process's run took the lease over

    def watch() -> None:
        while not taken and time.time() < killed_at + 60:
            now = holder()
            if now is not None and f":{os.getpid()}:" in now.holder:
                taken.append(time.time())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    report = run_ingest(f"s3://{archive}/videos", cfg)
    watcher.join()
    assert (report.done, report.failed) == (len(VIDEOS), 0)
    assert taken, "the next run never held the lease"
    assert dead.expires_at - 0.5 <= taken[0] <= dead.expires_at + 2.0  # at its expiry
    assert taken[0] - killed_at <= lease_s + 2.0
    assert_each_video_once(cfg, len(VIDEOS))
