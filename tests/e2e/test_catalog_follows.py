"""The catalog follows the archive, and readers follow the catalog.

1. Ingest (real Prefect + Ray), delete a file, ingest again: its row says ``deleted``, its
   memories are pruned, and neither selection nor SQL returns it; put it back and it is
   ingested and selected again.
2. A writer process killed between its memories commit and its catalog commit: the
   memories are in the table, yet no reader sees them until a re-run commits the row.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import lance
import numpy as np
import pytest

from actors.encode import EncodeStage
from actors.query import QueryStage
from actors.runtime import bind_model
from actors.writer import MemoryWriter
from flows.ingest import ingest_flow
from schemas.records import Clip, Question, VideoOutcome, VideoTask, video_id_for
from world.samples import write_synthetic_video

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = ["What moves across the frame?", "When does a red circle appear?"]


def _selected(stage: QueryStage) -> set[str]:
    """Every video any of the questions selects (max_videos covers the whole archive)."""
    results = stage.select([Question(question=q) for q in QUESTIONS])
    assert all(r.error is None for r in results), [r.error for r in results]
    return {clip.video_id for r in results for clip in r.clips}


def _sql_videos(stage: QueryStage) -> set[str]:
    plain = stage.sql("SELECT video_id FROM memories LIMIT 1000")
    ranked = stage.sql(f"SELECT video_id FROM memories ORDER BY relevance('{QUESTIONS[0]}')")
    return set(plain["video_id"].to_pylist()) | set(ranked["video_id"].to_pylist())


def _table(db: Path, name: str, columns: list[str]) -> list[dict]:
    return lance.dataset(str(db / f"{name}.lance")).to_table(columns=columns).to_pylist()


def test_deleted_video_is_marked_pruned_and_never_selected(
    tmp_path, prefect_harness, ray_local, make_config
):
    archive, db = tmp_path / "archive", tmp_path / "db"
    paths = [write_synthetic_video(archive / f"v{i}.mp4", 3.0 + i, seed=40 + i) for i in range(3)]
    ids = [video_id_for(str(p.resolve())) for p in paths]
    cfg = make_config(db)
    bound = bind_model(cfg)
    first = ingest_flow(str(archive), cfg, bound=bound)
    assert (first.done, first.failed, first.deleted) == (3, 0, 0)
    stage = QueryStage(bound.checkpoint, bound.encoder, bound.config.storage, cfg.query)
    assert _selected(stage) == set(ids)

    gone, kept = paths[1], {ids[0], ids[2]}
    saved = gone.read_bytes()
    gone.unlink()
    second = ingest_flow(str(archive), cfg, bound=bound)
    assert (second.done, second.skipped, second.deleted) == (0, 2, 1)
    assert second.deleted_uris == [str(gone.resolve())]
    status = {r["video_id"]: r["status"] for r in _table(db, "videos", ["video_id", "status"])}
    assert status == {ids[0]: "done", ids[1]: "deleted", ids[2]: "done"}
    clips = {r["video_id"] for r in _table(db, "memories", ["video_id"])}
    assert clips == kept  # pruned in the same run
    assert _selected(stage) == kept  # the same stage: it noticed the catalog changed
    assert _sql_videos(stage) == kept

    gone.write_bytes(saved)  # it comes back: ingested again
    third = ingest_flow(str(archive), cfg, bound=bound)
    assert (third.done, third.skipped, third.deleted) == (1, 2, 0)
    assert _selected(stage) == set(ids)


# The writer of an ingest run, in its own process: it commits one video's memories and,
# with "kill", dies (os._exit, like a SIGKILL: no clean-up) at the catalog commit.
WRITER = """
import os, pickle, sys
from actors.writer import MemoryWriter
from schemas.config import StorageConfig
db, encoder, dims, batch, kill = sys.argv[1:]
outcome, records = pickle.loads(open(batch, "rb").read())
writer = MemoryWriter(StorageConfig(db=db), encoder, tuple(int(d) for d in dims.split(",")))
if kill == "kill":
    writer.catalog.record = lambda *args, **kwargs: os._exit(137)
writer.add(outcome, records)
writer.flush()
"""


def _encode(encode: EncodeStage, task: VideoTask, n: int, seed: int):
    model = encode.model
    rng = np.random.default_rng(seed)
    shape = (model.clip_frames, model.image_size, model.image_size, 3)
    records = []
    for i in range(n):
        frames = rng.integers(0, 255, shape, np.uint8)
        clip = Clip(task.video_id, i, 16.0 * i, 16.0 * (i + 1), frames, model.clip_frames)
        records += encode.encode_step([clip])
    encode.release([task.video_id])
    return VideoOutcome(task, "done", n_clips=n), records


def _run_writer(db: Path, bound, batch: Path, kill: bool) -> int:
    dims = ",".join(str(d) for d in bound.dims)
    args = [str(db), bound.encoder, dims, str(batch), "kill" if kill else "run"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", WRITER, *args], cwd=ROOT, env=env, timeout=120)
    return done.returncode


def test_memories_of_a_writer_killed_before_its_catalog_commit_stay_hidden(tmp_path, make_config):
    db = tmp_path / "db"
    cfg = make_config(db)
    bound = bind_model(cfg)
    encode = EncodeStage(bound.checkpoint, device="cpu")
    encode.setup()
    early = [VideoTask(uri=f"/archive/early{i}.mp4", size=1, etag="1") for i in range(2)]
    writer = MemoryWriter(bound.config.storage, bound.encoder, bound.dims)
    for seed, task in enumerate(early):
        writer.add(*_encode(encode, task, 3, seed))
    writer.flush()
    # the late video's clips are the first one's, pixel for pixel: it would rank alongside
    late = VideoTask(uri="/archive/late.mp4", size=1, etag="1")
    batch = tmp_path / "late.pickle"
    batch.write_bytes(pickle.dumps(_encode(encode, late, 3, seed=0)))

    assert _run_writer(db, bound, batch, kill=True) == 137
    clips = {r["video_id"] for r in _table(db, "memories", ["video_id"])}
    catalogued = {r["video_id"] for r in _table(db, "videos", ["video_id"])}
    assert late.video_id in clips and late.video_id not in catalogued  # the window
    stage = QueryStage(bound.checkpoint, bound.encoder, bound.config.storage, cfg.query)
    early_ids = {t.video_id for t in early}
    assert _selected(stage) == early_ids
    assert _sql_videos(stage) == early_ids

    assert _run_writer(db, bound, batch, kill=False) == 0  # the re-run commits the row
    assert _selected(stage) == early_ids | {late.video_id}
    assert _sql_videos(stage) == early_ids | {late.video_id}
