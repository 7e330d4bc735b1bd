"""Frames and mp4 files of a procedural world (``world.scenes``).

``render_frame`` is a pure function of (world, t, size), and ``write_world_video`` encodes
the same frames with PyAV, so the mp4 and the direct render agree. Training renders its
sampled frames directly, through ``ingest_view``: the frame as the decoder would give it.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from world.scenes import (
    BACKGROUNDS,
    COLOURS,
    HORIZONTAL_TRAVEL,
    VERTICAL_TRAVEL,
    Obj,
    World,
    ground_truth_path,
    read_ground_truth,
    write_ground_truth,
)

SIZE_RADIUS = {"small": 0.13, "large": 0.22}  # of min(width, height)
GROW_SCALE = (0.6, 1.3)  # radius factor at the start and end of a "grow" scene
TEXT_COLOUR = (175, 175, 175)  # a light grey that is none of the object colours

# A 3x5 bitmap font ("#" = ink), rows top to bottom separated by "/".
_FONT = {
    "A": ".#./#.#/###/#.#/#.#", "B": "##./#.#/##./#.#/##.", "C": ".##/#../#../#../.##",
    "D": "##./#.#/#.#/#.#/##.", "E": "###/#../##./#../###", "F": "###/#../##./#../#..",
    "G": ".##/#../#.#/#.#/.##", "H": "#.#/#.#/###/#.#/#.#", "I": "###/.#./.#./.#./###",
    "J": "..#/..#/..#/#.#/.#.", "K": "#.#/#.#/##./#.#/#.#", "L": "#../#../#../#../###",
    "M": "#.#/###/###/#.#/#.#", "N": "##./#.#/#.#/#.#/#.#", "O": ".#./#.#/#.#/#.#/.#.",
    "P": "##./#.#/##./#../#..", "Q": ".#./#.#/#.#/##./.##", "R": "##./#.#/##./#.#/#.#",
    "S": ".##/#../.#./..#/##.", "T": "###/.#./.#./.#./.#.", "U": "#.#/#.#/#.#/#.#/###",
    "V": "#.#/#.#/#.#/#.#/.#.", "W": "#.#/#.#/###/###/#.#", "X": "#.#/#.#/.#./#.#/#.#",
    "Y": "#.#/#.#/.#./.#./.#.", "Z": "###/..#/.#./#../###", "0": "###/#.#/#.#/#.#/###",
    "1": ".#./##./.#./.#./###", "2": "##./..#/.#./#../###", "3": "##./..#/.#./..#/##.",
    "4": "#.#/#.#/###/..#/..#", "5": "###/#../##./..#/##.", "6": ".##/#../###/#.#/###",
    "7": "###/..#/.#./.#./.#.", "8": "###/#.#/###/#.#/###", "9": "###/#.#/###/..#/##.",
    " ": ".../.../.../.../...",
}  # fmt: skip
GLYPHS = {
    c: np.array([[ch == "#" for ch in row] for row in g.split("/")]) for c, g in _FONT.items()
}


@lru_cache(maxsize=256)
def text_bitmap(text: str, scale: int = 1) -> np.ndarray:
    """(5*scale, (4*len-1)*scale) bool ink mask of ``text`` (upper-cased; A-Z, 0-9, space)."""
    gap = np.zeros((5, 1), bool)
    parts: list[np.ndarray] = []
    for ch in text.upper():
        if ch not in GLYPHS:
            raise ValueError(f"no glyph for {ch!r} in {text!r}")
        parts += [GLYPHS[ch], gap]
    ink = np.concatenate(parts[:-1], axis=1)  # (5, 4*len-1)
    return np.kron(ink, np.ones((scale, scale), bool)).astype(bool)


def _circle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return u * u + v * v <= 1.0


def _square(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)


def _diamond(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(u) + np.abs(v) <= 1.05


def _triangle(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Apex up at v=-1, base at v=0.75 (image y grows downwards)."""
    return (v <= 0.75) & (np.abs(u) <= (v + 1.0) * 0.62)


def _star(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Five points, one straight up: the allowed radius zig-zags with the angle."""
    angle = np.arctan2(v, u) + np.pi / 2  # 0 at the top point
    k = np.mod(angle, 2 * np.pi / 5) / (2 * np.pi / 5)  # 0..1 between two points
    return np.hypot(u, v) <= 0.5 + 0.55 * np.abs(2.0 * k - 1.0)


SHAPE_MASKS = {
    "circle": _circle,
    "square": _square,
    "diamond": _diamond,
    "triangle": _triangle,
    "star": _star,
}


def object_geometry(obj: Obj, p: float, n: int, w: int, h: int) -> tuple[float, float, float]:
    """(cx, cy, r) in pixels at scene progress ``p`` (0..1) for one of ``n`` objects."""
    r = SIZE_RADIUS[obj.size] * min(w, h)
    cx, cy, s = obj.x * w, obj.y * h, p - 0.5  # s: -0.5 .. 0.5 over the scene
    if obj.motion in ("left", "right"):
        cx += (s if obj.motion == "right" else -s) * HORIZONTAL_TRAVEL / n * w
    elif obj.motion in ("up", "down"):
        cy += (s if obj.motion == "down" else -s) * VERTICAL_TRAVEL * h
    elif obj.motion in ("grow", "shrink"):
        a, b = GROW_SCALE if obj.motion == "grow" else GROW_SCALE[::-1]
        r *= a + (b - a) * p
    return cx, cy, r


def _draw_object(img: np.ndarray, obj: Obj, p: float, n: int) -> None:
    h, w, _ = img.shape
    cx, cy, r = object_geometry(obj, p, n, w, h)
    x0, x1 = max(0, int(cx - r)), min(w, int(cx + r) + 2)
    y0, y1 = max(0, int(cy - r)), min(h, int(cy + r) + 2)
    if x0 >= x1 or y0 >= y1:
        return
    u = ((np.arange(x0, x1) + 0.5 - cx) / r)[None, :]  # (1, bw)
    v = ((np.arange(y0, y1) + 0.5 - cy) / r)[:, None]  # (bh, 1)
    img[y0:y1, x0:x1][SHAPE_MASKS[obj.shape](u, v)] = COLOURS[obj.colour]


def _draw_text(img: np.ndarray, text: str) -> None:
    """The word centred near the bottom edge, as large as fits a band of ~1/8 the height."""
    h, w, _ = img.shape
    scale = max(1, min(h // 40, w // (4 * len(text) * 2)))
    ink = text_bitmap(text, scale)
    th, tw = ink.shape
    if tw > w:  # too long for this frame: crop on the right
        ink, tw = ink[:, :w], w
    y0, x0 = h - th - max(1, h // 30), (w - tw) // 2
    img[y0 : y0 + th, x0 : x0 + tw][ink] = TEXT_COLOUR


def render_frame(world: World, t: float, size: tuple[int, int] | None = None) -> np.ndarray:
    """The (H, W, 3) uint8 frame at ``t`` seconds; ``size=(width, height)`` overrides."""
    w, h = size or (world.width, world.height)
    scene = world.scene_at(t)
    p = scene.progress(t)
    img = np.empty((h, w, 3), np.uint8)
    img[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        _draw_object(img, obj, p, len(scene.objects))
    if scene.text:
        _draw_text(img, scene.text)
    return img


def ingest_view(world: World, t: float, size: int) -> np.ndarray:
    """The (size, size, 3) frame at ``t`` as ingest hands it to the model: rendered at the
    video's own size, converted to yuv420p and scaled by swscale as the decoder does
    (``decode.sampling``), so training sees the aspect squeeze and chroma subsampling of the
    real pipeline (only the codec's compression artefacts are missing)."""
    to_yuv, to_rgb = _reformatters()
    frame = av.VideoFrame.from_ndarray(render_frame(world, t), format="rgb24")
    frame = to_yuv.reformat(frame, format="yuv420p")
    return to_rgb.reformat(frame, width=size, height=size, format="rgb24").to_ndarray()


@lru_cache(maxsize=1)
def _reformatters() -> tuple[VideoReformatter, VideoReformatter]:
    """Reused swscale contexts (a fresh one per frame costs ~7 ms)."""
    return VideoReformatter(), VideoReformatter()


def frame_count(world: World) -> int:
    """Frames in the mp4 of ``world``: frame i shows t = i / fps."""
    return round(world.duration_s * world.fps)


def _add_stream(out, world: World, codec: str, preset: str, gop_seconds: float):
    stream = out.add_stream(codec, rate=Fraction(world.fps).limit_denominator(1001))
    stream.width, stream.height, stream.pix_fmt = world.width, world.height, "yuv420p"
    gop = max(1, round(world.fps * gop_seconds))
    stream.codec_context.gop_size = gop
    if codec == "libx264":  # a fixed GOP: no extra keyframes at scene cuts
        stream.options = {
            "preset": preset,
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "x264-params": "scenecut=0",
        }
    return stream


def write_world_video(
    world: World,
    path: str | Path,
    codec: str = "libx264",
    preset: str = "ultrafast",
    gop_seconds: float = 2.0,
) -> Path:
    """Encode every frame of ``world`` (at ``world.fps``, its width x height) into an mp4.

    The frames go to ``<path>.partial`` first, moved to ``path`` once complete: a write
    that is interrupted never leaves a truncated video under the final name."""
    if world.width % 2 or world.height % 2:
        raise ValueError(f"yuv420p needs an even frame size, got {world.width}x{world.height}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        with av.open(str(partial), "w", format="mp4") as out:
            stream = _add_stream(out, world, codec, preset, gop_seconds)
            for index in range(frame_count(world)):
                img = render_frame(world, index / world.fps)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
            out.mux(stream.encode(None))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return partial.replace(path)


def write_world(world: World, path: str | Path, **video_options) -> tuple[Path, Path]:
    """The mp4 and its ground truth beside it (``<video>.world.json``); the ground truth is
    written first, so a video under its final name always has it."""
    truth = write_ground_truth(world, path)
    return write_world_video(world, path, **video_options), truth


def write_world_once(world: World, path: str | Path) -> Path:
    """The world's video and ground truth at ``path``, written unless already there.

    A video already at ``path`` is reused only if its ground truth is this world: another
    world under the same name (another length, an older generator) is an error, since the
    memories stored for that path would answer for the wrong video.
    """
    path = Path(path)
    if path.exists():
        if not ground_truth_path(path).exists():
            raise ValueError(
                f"{path} has no ground truth beside it (not a world video, or left by an "
                "interrupted write of an older version); remove it or use a fresh work directory"
            )
        if read_ground_truth(path) != world:
            raise ValueError(
                f"{path} holds another world than seed {world.seed}, {world.duration_s:g} s; "
                "use a fresh work directory"
            )
        return path
    return write_world(world, path)[0]
