"""Thumbnails made at ingest: one JPEG per clip from its middle sampled frame at full size,
with no extra decoding; and the thumbnails table they are stored in."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest

from actors.decode import DecodeStage
from decode.sampling import SampleStats, sample_frames
from decode.thumbnails import ThumbnailPlan, thumbnail_size
from schemas.config import DecodeConfig, StorageConfig
from schemas.records import MemoryRecord, VideoTask
from storage.db import connect
from storage.thumbnails import ThumbnailStore
from world.samples import write_synthetic_video

SAMPLE_FPS, CLIP_FRAMES = 2.0, 4  # 2 s clips


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("thumbs")
    return write_synthetic_video(root / "wide.mp4", 7, size=(320, 240), gop_seconds=1.0)


def _decoded(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0)).to_ndarray(format="rgb24")


def _frame_at(path: Path, t: float, size: tuple[int, int]) -> np.ndarray:
    """The first frame at or after ``t``, at ``size`` (w, h), from a plain full decode."""
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if frame.time >= t - 1e-3:
                return frame.to_ndarray(width=size[0], height=size[1], format="rgb24")
    raise AssertionError(f"no frame at {t}")


def test_each_clip_gets_a_small_jpeg_of_its_middle_frame(video):
    cfg = DecodeConfig(sample_fps=SAMPLE_FPS, clip_frames=CLIP_FRAMES, frame_size=32)
    task = VideoTask(uri=str(video), size=1, etag="e", archive=str(video.parent))
    chunks = list(DecodeStage(cfg).stream(task))
    assert chunks[-1].error is None
    clips = [clip for chunk in chunks for clip in chunk.clips]
    assert len(clips) == 4  # 7 s at 2 fps: 14 samples, the last clip short
    for clip in clips:
        assert clip.thumbnail is not None and clip.thumbnail[:2] == b"\xff\xd8"  # JPEG SOI
        assert len(clip.thumbnail) < 8_000
    # full clips: 160 x 120 from the full-size frame at the clip's middle sample
    for clip in clips[:3]:
        image = _decoded(clip.thumbnail)
        assert image.shape == (120, 160, 3)
        middle = clip.t_start + (CLIP_FRAMES // 2) / SAMPLE_FPS
        want = _frame_at(video, middle, (160, 120)).astype(float)
        first = _frame_at(video, clip.t_start, (160, 120)).astype(float)
        error = np.abs(image - want).mean()
        assert error < 8  # JPEG loss only
        assert error < np.abs(image - first).mean()  # the middle frame, not the first
    # the short last clip (2 samples, none at index 2) falls back to its model-size frame
    assert _decoded(clips[3].thumbnail).shape[:2] == (32, 32)


def test_thumbnails_cost_no_extra_decoding(video):
    plain, with_thumbs = SampleStats(), SampleStats()
    a = list(sample_frames(video, SAMPLE_FPS, 32, "exact", plain))
    plan = ThumbnailPlan(every=CLIP_FRAMES, at=CLIP_FRAMES // 2)
    b = list(sample_frames(video, SAMPLE_FPS, 32, "exact", with_thumbs, thumbnails=plan))
    assert [t for t, _ in a] == [t for t, _ in b]
    assert with_thumbs.frames_decoded == plain.frames_decoded
    assert with_thumbs.packets_decoded == plain.packets_decoded
    assert sorted(plan.made) == [2, 6, 10]  # the middle sample of each full clip


def test_thumbnail_size_keeps_the_aspect_on_the_long_side():
    assert thumbnail_size(1920, 1080) == (160, 90)
    assert thumbnail_size(1080, 1920) == (90, 160)
    assert thumbnail_size(64, 64) == (160, 160)


def _record(video_id: str, index: int, jpeg: bytes | None) -> MemoryRecord:
    empty = np.zeros(1, np.float32)
    return MemoryRecord(video_id, index, 0.0, 1.0, empty, empty, thumbnail=jpeg)


def test_thumbnail_store_upserts_drops_stale_and_deleted(tmp_path):
    store = ThumbnailStore(connect(StorageConfig(db=str(tmp_path / "db"))))
    assert store.get("a", 0) is None  # no table yet
    written = store.write([_record("a", i, b"a%d" % i) for i in range(3)], {"a": 3})
    assert written == 3 and store.get("a", 2) == b"a2"
    # the video came back shorter and changed: clip 1 replaced, clip 2 dropped
    store.write([_record("a", 0, b"new0"), _record("a", 1, b"new1")], {"a": 2})
    store.write([_record("b", 0, b"b0"), _record("b", 1, None)], {"b": 2})
    assert [store.get("a", i) for i in range(3)] == [b"new0", b"new1", None]
    assert store.get("b", 0) == b"b0" and store.get("b", 1) is None
    assert store.delete_videos(["a"]) == 2
    assert store.get("a", 0) is None and store.get("b", 0) == b"b0"


def test_the_writer_stores_thumbnails_beside_the_memories_and_drops_deleted_ones(tmp_path):
    from actors.writer import MemoryWriter
    from schemas.records import VideoOutcome
    from schemas.tables import MEMORIES
    from storage.db import open_table

    q, m, d = 4, 2, 4
    cfg = StorageConfig(db=str(tmp_path / "db"), commit_videos=8)
    writer = MemoryWriter(cfg, "enc@1", (q, m, d))
    archive = str(tmp_path / "archive")
    tasks = [
        VideoTask(uri=f"{archive}/{name}.mp4", size=1, etag="e", archive=archive)
        for name in ("kept", "gone")
    ]
    for task in tasks:
        key, memory = np.ones(q, np.float32) / 2, np.zeros((m, d), np.float32)
        records = [
            MemoryRecord(task.video_id, i, i, i + 1.0, key, memory, thumbnail=b"%d" % i)
            for i in range(2)
        ]
        writer.add(VideoOutcome(task, "done", n_clips=2), records)
    writer.flush()
    thumbnails = ThumbnailStore(writer.store.db)
    assert [thumbnails.get(t.video_id, 1) for t in tasks] == [b"1", b"1"]
    assert "jpeg" not in open_table(writer.store.db, MEMORIES).schema.names  # memories lean
    writer.follow_deletions(archive, tasks[:1])  # "gone" left the archive
    assert thumbnails.get(tasks[0].video_id, 0) == b"0"
    assert thumbnails.get(tasks[1].video_id, 0) is None
