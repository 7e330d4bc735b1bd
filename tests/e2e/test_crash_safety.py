"""SIGKILL an ingest mid-run, run it again: every video done once, no duplicate or missing clip."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import lance
import pytest
import yaml

from flows.ingest import ingest_flow
from schemas.config import load_config

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

N_VIDEOS = 12
ROOT = Path(__file__).resolve().parents[2]


def _catalog(db: Path) -> list[dict]:
    path = db / "videos.lance"
    if not path.exists():
        return []
    try:
        return lance.dataset(str(path)).to_table(columns=["video_id", "status"]).to_pylist()
    except Exception:  # a commit in flight: try again on the next poll
        return []


def _kill_when_partly_done(proc: subprocess.Popen, db: Path, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        done = sum(1 for row in _catalog(db) if row["status"] == "done")
        if done >= 1:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return done
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    pytest.fail(f"ingest never committed a video (rc={proc.returncode})")


def test_sigkill_mid_run_then_rerun_is_exact(tmp_path, model_cache, prefect_harness, ray_local):
    from world.samples import write_synthetic_video

    archive = tmp_path / "archive"
    for i in range(N_VIDEOS):
        write_synthetic_video(archive / f"v{i:02d}.mp4", 20.0 + i, seed=100 + i)
    db = tmp_path / "db"
    config_file = tmp_path / "vmem.yaml"
    config_file.write_text(
        yaml.safe_dump(
            {
                "storage": {"db": str(db), "commit_videos": 1},
                "model": {"cache_dir": str(model_cache)},
                "encode": {"batch_videos": 1, "num_decoders": 1},
            }
        )
    )
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.app", "ingest", str(archive), "--config", str(config_file)],
        cwd=ROOT,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    done_at_kill = _kill_when_partly_done(proc, db)
    assert done_at_kill < N_VIDEOS, "the run finished before it could be killed"

    report = ingest_flow(str(archive), load_config(config_file))
    assert report.failed == 0

    catalog = _catalog(db)
    assert Counter(row["video_id"] for row in catalog).most_common(1)[0][1] == 1
    assert len(catalog) == N_VIDEOS and all(row["status"] == "done" for row in catalog)
    memories = lance.dataset(str(db / "memories.lance")).to_table(
        columns=["video_id", "clip_index", "encoder"]
    )
    keys = list(zip(*(memories.column(c).to_pylist() for c in memories.column_names), strict=True))
    assert len(keys) == len(set(keys)), "duplicate clip rows"
    n_clips = dict(
        (r["video_id"], r["n_clips"])
        for r in lance.dataset(str(db / "videos.lance"))
        .to_table(columns=["video_id", "n_clips"])
        .to_pylist()
    )
    for video_id, n in n_clips.items():
        indices = sorted(k[1] for k in keys if k[0] == video_id)
        assert indices == list(range(n)), f"missing clips of {video_id}"
