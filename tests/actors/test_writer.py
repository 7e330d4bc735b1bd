"""The single writer of an ingest run, on a LanceDB folder: commit order, batching, reruns."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from actors.writer import MemoryWriter
from schemas.config import StorageConfig
from schemas.records import MemoryRecord, StageError, VideoOutcome, VideoTask
from schemas.tables import VIDEOS
from storage.catalog import Catalog
from storage.db import open_table
from storage.memories import MemoryStore

Q, M, D = 16, 2, 4  # archive key width, memory tokens, hidden size of the fake encoder
ENCODER = "fake-enc@1"


def done(name: str, n_clips: int, seed: int = 0) -> tuple[VideoOutcome, list[MemoryRecord]]:
    """A video that finished with ``n_clips`` clips, and their records."""
    task = VideoTask(uri=f"/archive/{name}.mp4", size=1000, etag="e1", archive="news")
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_clips):
        key = rng.normal(size=Q).astype(np.float32)
        memory = rng.normal(size=(M, D)).astype(np.float32)
        records.append(MemoryRecord(task.video_id, i, 4.0 * i, 4.0 * (i + 1), key / 3.0, memory))
    return VideoOutcome(task, "done", n_clips=n_clips), records


def failed(name: str) -> tuple[VideoOutcome, list[MemoryRecord]]:
    task = VideoTask(uri=f"/archive/{name}.mp4", size=10, etag="e1", archive="news")
    error = StageError("decode", f"{task.uri}: truncated")
    return VideoOutcome(task, "failed", error=error), []


@pytest.fixture
def cfg(tmp_path) -> StorageConfig:
    return StorageConfig(db=str(tmp_path / "db"), commit_videos=2)


def memory_rows(cfg: StorageConfig) -> Counter:
    """Memory rows per video_id, as a fresh reader sees them."""
    return Counter(MemoryStore(cfg).scan(None, ["video_id"])["video_id"].to_pylist())


def catalog_rows(cfg: StorageConfig) -> dict[str, dict]:
    """Catalog rows by uri, as a fresh reader sees them."""
    return {row["uri"]: row for row in Catalog(cfg).all().to_pylist()}


def test_memories_are_visible_before_the_catalog_row_is_written(cfg, monkeypatch):
    writer = MemoryWriter(cfg, ENCODER, (Q, M, D))
    calls: list[str] = []
    write_memories, record = writer.store.write_memories, writer.catalog.record

    def spied_write_memories(records, encoder, tasks):
        calls.append("memories")
        return write_memories(records, encoder, tasks)

    def checked_record(outcomes, encoder):
        calls.append("catalog")
        rows = memory_rows(cfg)
        for outcome in outcomes:  # a reader that trusts "done" finds every clip
            assert rows[outcome.task.video_id] == outcome.n_clips
        return record(outcomes, encoder)

    monkeypatch.setattr(writer.store, "write_memories", spied_write_memories)
    monkeypatch.setattr(writer.catalog, "record", checked_record)
    writer.add(*done("a", 3, seed=1))
    writer.add(*done("b", 2, seed=2))
    assert calls == ["memories", "catalog"]  # one commit of each for the two videos
    assert {row["status"] for row in catalog_rows(cfg).values()} == {"done"}


def test_commits_every_commit_videos_videos(cfg):
    writer = MemoryWriter(cfg, ENCODER, (Q, M, D))
    commits = []
    for i in range(5):
        writer.add(*done(f"v{i}", 2, seed=i))
        commits.append(writer.commits)
    assert commits == [0, 1, 1, 2, 2]
    assert len(catalog_rows(cfg)) == 4 and sum(memory_rows(cfg).values()) == 8
    writer.flush()  # the fifth video, left in the buffer
    assert writer.commits == 3
    assert len(catalog_rows(cfg)) == 5 and sum(memory_rows(cfg).values()) == 10


def test_failed_videos_get_a_catalog_row_and_no_memories(cfg):
    writer = MemoryWriter(cfg, ENCODER, (Q, M, D))
    good, bad = done("good", 3), failed("bad")
    writer.add(*good)
    writer.add(*bad)
    rows = catalog_rows(cfg)
    assert rows["/archive/bad.mp4"]["status"] == "failed"
    assert rows["/archive/bad.mp4"]["error"] == "decode: /archive/bad.mp4: truncated"
    assert rows["/archive/good.mp4"]["status"] == "done"
    assert memory_rows(cfg) == {good[0].task.video_id: 3}


def test_flush_with_nothing_buffered_commits_nothing(cfg):
    writer = MemoryWriter(cfg, ENCODER, (Q, M, D))
    version = writer.store.table.version
    writer.flush()
    assert writer.commits == 0
    assert writer.store.table.version == version
    assert open_table(writer.store.db, VIDEOS) is None  # not even an empty catalog
    writer.add(*done("a", 1))
    writer.flush()  # "a" waits in the buffer (commit_videos=2): one commit
    versions = (writer.store.table.version, writer.catalog.table.version)
    writer.flush()  # and now nothing is left
    assert writer.commits == 1
    assert (writer.store.table.version, writer.catalog.table.version) == versions


def test_rewriting_a_video_does_not_duplicate_rows(cfg):
    writer = MemoryWriter(cfg, ENCODER, (Q, M, D))
    video = done("a", 4)
    writer.add(*video)
    writer.add(*video)  # twice in one commit
    writer.add(*video)  # and again in the next
    writer.flush()
    assert writer.commits == 2
    assert memory_rows(cfg) == {video[0].task.video_id: 4}
    rows = catalog_rows(cfg)
    assert len(rows) == 1 and rows["/archive/a.mp4"]["attempts"] == 2  # one per commit
    shorter = done("a", 2, seed=5)  # the object changed and got shorter
    writer.add(*shorter)
    writer.flush()
    assert memory_rows(cfg) == {video[0].task.video_id: 2}
    assert catalog_rows(cfg)["/archive/a.mp4"]["n_clips"] == 2
