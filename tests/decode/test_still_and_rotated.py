"""Still images posing as video are refused; a rotated video's frames come out upright."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from actors.decode import DecodeStage
from decode.sampling import VideoError, sample_frames
from schemas.config import DecodeConfig
from schemas.records import VideoTask
from world.samples import write_still_image, write_synthetic_video

WIDTH, HEIGHT = 64, 32  # landscape as stored, so a quarter turn shows in the probe


def _write_marked(path: Path, degrees: int | None, seconds: float = 2.0, fps: int = 10) -> Path:
    """A video whose stored frames are black with a white top-left quadrant, carrying a
    display matrix that rotates it ``degrees`` counter-clockwise (None: no matrix)."""
    img = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    img[: HEIGHT // 2, : WIDTH // 2] = 255
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        if degrees is not None:
            stream.set_display_rotation(degrees)
        for _ in range(round(seconds * fps)):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _bright_quadrant(rgb: np.ndarray) -> str:
    """Which quadrant of a (S, S, 3) frame is the white one."""
    s = rgb.shape[0] // 2
    means = {
        "top-left": rgb[:s, :s].mean(),
        "top-right": rgb[:s, s:].mean(),
        "bottom-left": rgb[s:, :s].mean(),
        "bottom-right": rgb[s:, s:].mean(),
    }
    best = max(means, key=lambda k: means[k])
    assert means[best] > 200 and sorted(means.values())[-2] < 60, means
    return best


@pytest.mark.parametrize(
    "degrees, shown",
    [
        (None, "top-left"),
        (90, "bottom-left"),  # counter-clockwise: the top-left corner goes down
        (-90, "top-right"),  # clockwise (a phone held upright records this)
        (180, "bottom-right"),
    ],
)
@pytest.mark.parametrize("mode", ["exact", "keyframe"])
def test_rotated_video_frames_come_out_upright(tmp_path, degrees, shown, mode):
    path = _write_marked(tmp_path / "rotated.mp4", degrees)
    frames = list(sample_frames(path, 1.0, 32, mode))
    assert [t for t, _ in frames] == [0.0, 1.0]
    assert {_bright_quadrant(rgb) for _, rgb in frames} == {shown}


@pytest.mark.parametrize("degrees, size", [(None, (WIDTH, HEIGHT)), (90, (HEIGHT, WIDTH))])
def test_catalog_probe_is_the_displayed_shape(tmp_path, degrees, size):
    path = _write_marked(tmp_path / "v.mp4", degrees)
    stage = DecodeStage(DecodeConfig(sample_fps=1.0, clip_frames=2, frame_size=32))
    chunks = list(stage.stream(VideoTask(uri=str(path), size=1, etag="1")))
    assert chunks[-1].error is None and chunks[0].probe is not None
    assert (chunks[0].probe.width, chunks[0].probe.height) == size


@pytest.mark.parametrize("codec, kind", [("png", "png"), ("mjpeg", "jpeg")])
def test_still_image_named_mp4_is_refused(tmp_path, codec, kind):
    path = write_still_image(tmp_path / "photo.mp4", codec)
    with pytest.raises(VideoError) as info:
        list(sample_frames(path, 1.0, 32))
    assert info.value.kind == "not_video"
    assert str(info.value) == f"not a video: {path} is a still image ({kind})"

    stage = DecodeStage(DecodeConfig(sample_fps=1.0, clip_frames=2, frame_size=32))
    (chunk,) = stage.stream(VideoTask(uri=str(path), size=1, etag="1"))
    assert chunk.last and not chunk.clips and chunk.error.kind == "not_video"
    assert chunk.error.message == f"not a video: {path} is a still image ({kind})"


def test_listing_problem_fails_without_opening(tmp_path):
    path = write_synthetic_video(tmp_path / "fine.mp4", 1.0)  # readable, yet never opened
    task = VideoTask(uri=str(path), size=1, etag="loop:1", problem=f"symlink loop: {path}")
    stage = DecodeStage(DecodeConfig(sample_fps=1.0, clip_frames=2, frame_size=32))
    (chunk,) = stage.stream(task)
    assert chunk.last and not chunk.clips and chunk.probe is None
    assert (chunk.error.kind, chunk.error.message) == ("listing", f"symlink loop: {path}")
