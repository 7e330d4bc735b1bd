"""Sparse sampling: which frames are picked, what it costs, how bad files fail."""

from __future__ import annotations

import math
from pathlib import Path

import av
import numpy as np
import pytest

from decode.sampling import SampleStats, VideoError, open_container, probe, sample_frames
from world.samples import frame_index_of, write_bad_inputs, write_synthetic_video


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sampling")
    return {
        # 12 s, 25 fps, forced B-frames (decode order != display order), 2.4 s GOPs
        "bframes": write_synthetic_video(
            root / "bframes.mp4", 12, fps=25, gop_seconds=2.4, bframes=3
        ),
        # 10 s, 30 fps, 2 s GOPs, no B-frames
        "plain": write_synthetic_video(root / "plain.mp4", 10, gop_seconds=2.0),
        # 8 s, 30 fps, keyframe every 0.5 s
        "short_gop": write_synthetic_video(root / "short_gop.mp4", 8, gop_seconds=0.5),
    }


def _frame_times(path: Path) -> tuple[list[float], list[float]]:
    """Every frame's time and the keyframes' times, from a full decode."""
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.time for f in frames], [f.time for f in frames if f.key_frame]


def _expected_exact(times: list[float], sample_fps: float, duration: float) -> list[int]:
    """Index of the first frame at or after each target (the last frame past the end)."""
    n = math.ceil(duration * sample_fps - 1e-9)
    return [
        next((i for i, ft in enumerate(times) if ft >= k / sample_fps - 1e-3), len(times) - 1)
        for k in range(n)
    ]


@pytest.mark.parametrize("name", ["bframes", "plain"])
@pytest.mark.parametrize("sample_fps", [1.0, 0.7, 3.0])
def test_exact_mode_picks_the_frame_at_each_target(videos, name, sample_fps):
    times, _ = _frame_times(videos[name])
    duration = len(times) / round(1 / (times[1] - times[0]))
    stats = SampleStats()
    out = list(sample_frames(videos[name], sample_fps, 48, "exact", stats))
    assert [t for t, _ in out] == pytest.approx([k / sample_fps for k in range(len(out))])
    assert [frame_index_of(f) for _, f in out] == _expected_exact(times, sample_fps, duration)
    assert stats.frames_converted == len(out)  # only the picked frames become RGB
    assert stats.frames_decoded < len(times)  # the tail of each GOP is never decoded


def test_frames_are_small_rgb_uint8(videos):
    for _, frame in sample_frames(videos["plain"], 1.0, 32, "exact"):
        assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8


def test_keyframe_mode_takes_the_nearest_keyframe_and_decodes_less(videos):
    path = videos["bframes"]
    times, keys = _frame_times(path)
    exact, key = SampleStats(), SampleStats()
    n_exact = len(list(sample_frames(path, 1.0, 48, "exact", exact)))
    out = list(sample_frames(path, 1.0, 48, "keyframe", key))
    assert len(out) == n_exact == 12  # the same regular grid of sample times
    for t, frame in out:
        nearest = min(keys, key=lambda k: (abs(k - t), k))  # ties go to the earlier keyframe
        assert times[frame_index_of(frame)] == pytest.approx(nearest)
    assert key.frames_decoded == len(keys) and key.packets_decoded == len(keys)
    assert key.frames_decoded * 5 < exact.frames_decoded


def test_auto_uses_keyframes_only_when_gops_are_short(videos):
    short, long = SampleStats(), SampleStats()
    out = list(sample_frames(videos["short_gop"], 1.0, 32, "auto", short))
    list(sample_frames(videos["plain"], 1.0, 32, "auto", long))
    assert short.gops_exact == 0 and short.gops_keyframe == 16
    assert long.gops_keyframe == 0 and long.gops_exact == 5
    # keyframes every 0.5 s fall exactly on the 1 s grid
    assert [frame_index_of(f) for _, f in out] == [30 * k for k in range(8)]


def test_file_like_and_open_container_sources(videos):
    path = videos["plain"]
    expected = [frame_index_of(f) for _, f in sample_frames(path, 1.0, 32, "exact")]
    with open(path, "rb") as handle:
        from_handle = [frame_index_of(f) for _, f in sample_frames(handle, 1.0, 32, "exact")]
    with open_container(path) as container:
        facts = probe(container)
        from_container = [frame_index_of(f) for _, f in sample_frames(container, 1.0, 32)]
    assert from_handle == expected == from_container
    assert (facts.width, facts.height, facts.fps, facts.codec) == (160, 120, 30.0, "h264")
    assert facts.duration_s == pytest.approx(10.0)


def test_sampling_streams_lazily(videos):
    stats = SampleStats()
    frames = sample_frames(videos["plain"], 1.0, 32, "exact", stats)
    next(frames)
    assert stats.gops_exact == 1  # only the first GOP has been read so far
    frames.close()


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize(
    "name, kind",
    [
        ("zero-byte.mp4", "open"),
        ("text.mp4", "open"),
        ("random.mp4", "open"),
        ("truncated_moov_end.mp4", "open"),
        ("audio_only.mp4", "no_video_stream"),
        ("truncated_faststart.mp4", "truncated"),
    ],
)
@pytest.mark.parametrize("mode", ["exact", "keyframe"])
def test_bad_inputs_raise_video_errors(bad, name, kind, mode):
    with pytest.raises(VideoError) as info:
        list(sample_frames(bad[name], 1.0, 32, mode))
    assert info.value.kind == kind
    assert str(bad[name]) in str(info.value)


def test_truncated_video_yields_what_it_has_before_failing(bad):
    got = []
    with pytest.raises(VideoError, match=r"truncated: decoded 3\.\d s of 6\.0 s"):
        for t, _ in sample_frames(bad["truncated_faststart.mp4"], 1.0, 32, "exact"):
            got.append(t)
    assert got == [0.0, 1.0, 2.0, 3.0]


def test_missing_file_and_bad_mode(tmp_path):
    with pytest.raises(VideoError) as info:
        list(sample_frames(tmp_path / "nope.mp4", 1.0, 32))
    assert info.value.kind == "missing" and "nope.mp4" in info.value.message
    with pytest.raises(ValueError, match="unknown sampling mode"):
        list(sample_frames(tmp_path / "nope.mp4", 1.0, 32, "every"))


def test_gops_over_the_buffer_cap_are_decoded_in_pieces(videos, monkeypatch):
    """A huge GOP is never buffered whole; the picks stay exact."""
    import decode.sampling

    path = videos["bframes"]
    expected = [frame_index_of(f) for _, f in sample_frames(path, 1.0, 48, "exact")]
    monkeypatch.setattr(decode.sampling, "MAX_GOP_BYTES", 4_000)
    stats = SampleStats()
    got = [frame_index_of(f) for _, f in sample_frames(path, 1.0, 48, "auto", stats)]
    assert got == expected
    assert stats.gops_exact > 3 * 5  # 5 GOPs, each cut into several pieces
