"""Small fakes for the storage tests: tasks, encoder outputs and a local database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest

from schemas.config import StorageConfig
from schemas.records import MemoryRecord, VideoTask
from storage.memories import MemoryStore

Q, M, D = 16, 2, 4  # archive key width, memory tokens, hidden size of the fake encoder
ENCODER = "fake-enc@1"


def fake_task(name: str, archive: str = "news", tags: tuple[str, ...] = ("a",)) -> VideoTask:
    return VideoTask(
        uri=f"/archive/{name}.mp4",
        size=1000,
        etag="e1",
        archive=archive,
        modified_at=datetime(2024, 1, 2, tzinfo=UTC),
        tags=tags,
    )


def fake_records(task: VideoTask, n_clips: int, seed: int = 0) -> list[MemoryRecord]:
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_clips):
        key = rng.normal(size=Q).astype(np.float32)
        records.append(
            MemoryRecord(
                video_id=task.video_id,
                clip_index=i,
                t_start=16.0 * i,
                t_end=16.0 * (i + 1),
                archive_key=key / np.linalg.norm(key),
                memory=rng.normal(size=(M, D)).astype(np.float32),
            )
        )
    return records


@pytest.fixture
def fake() -> SimpleNamespace:
    """The fake encoder's dims and id, and the task / record factories, for tests to use."""
    return SimpleNamespace(Q=Q, M=M, D=D, encoder=ENCODER, task=fake_task, records=fake_records)


@pytest.fixture
def make_batch() -> Callable[..., tuple[list[MemoryRecord], dict[str, VideoTask]]]:
    """Factory: ``make({"v1": 3, "v2": 2}, archive=...) -> (records, meta)``."""

    def make(clips: dict[str, int], archive: str = "news", seed: int = 0):
        records, meta = [], {}
        for j, (name, n) in enumerate(clips.items()):
            task = fake_task(name, archive=archive)
            meta[task.video_id] = task
            records += fake_records(task, n, seed=seed + j)
        return records, meta

    return make


@pytest.fixture
def local_cfg(tmp_path) -> StorageConfig:
    return StorageConfig(db=str(tmp_path / "db"))


@pytest.fixture
def store(local_cfg) -> MemoryStore:
    store = MemoryStore(local_cfg)
    store.ensure_memories(Q, M, D)
    return store
