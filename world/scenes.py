"""A procedural video world with ground truth, deterministic by seed.

A world is a sequence of scenes of a few whole seconds each; every scene shows one object
(optionally two) with a shape, colour, size and motion on a flat background, and optional
on-screen text. The world itself is the ground truth: it is small, JSON-serialisable, and
everything else (frames in ``world.render``, questions in ``world.questions``)
is derived from it, so a training loop can render sampled frames without any mp4.

Generation rules that keep questions well-posed: consecutive scenes never share a
(colour, shape), the objects of one scene differ in (colour, shape), and a needle's
(colour, shape) appears in its own scene and nowhere else.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

SHAPES = ("circle", "square", "triangle", "star", "diamond")
COLOURS: dict[str, tuple[int, int, int]] = {  # saturated/bright: far from every background
    "red": (230, 25, 25),
    "green": (30, 200, 50),
    "blue": (40, 90, 255),
    "yellow": (250, 230, 20),
    "white": (250, 250, 250),
    "magenta": (225, 40, 225),
    "orange": (255, 140, 0),
    "cyan": (30, 225, 235),
}
SIZES = ("small", "large")
MOTIONS = ("left", "right", "up", "down", "still", "grow", "shrink")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {  # dark or neutral, low saturation
    "black": (12, 12, 12),
    "charcoal": (50, 50, 50),
    "grey": (95, 95, 95),
    "navy": (18, 22, 62),
    "forest": (20, 55, 30),
    "maroon": (64, 20, 26),
    "brown": (72, 52, 30),
    "slate": (42, 52, 64),
}
TEXT_WORDS = ("NEWS", "GOAL", "STOP", "EXIT", "OPEN", "SALE", "LIVE", "HELLO", "CAT", "DOG")

HORIZONTAL_TRAVEL = 0.4  # of the frame width (divided by the number of objects)
VERTICAL_TRAVEL = 0.4  # of the frame height


@dataclass(frozen=True)
class Obj:
    """One object; equality ignores its layout (``x``, ``y``: centre at mid-scene, 0..1)."""

    shape: str
    colour: str
    size: str = "large"
    motion: str = "still"
    x: float = field(default=0.5, compare=False)
    y: float = field(default=0.5, compare=False)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("shape", self.shape, SHAPES),
            ("colour", self.colour, COLOURS),
            ("size", self.size, SIZES),
            ("motion", self.motion, MOTIONS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown {name} {value!r}; expected one of {list(allowed)}")

    @property
    def combo(self) -> tuple[str, str]:
        """(colour, shape): what questions name an object by."""
        return self.colour, self.shape

    def describe(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass
class Scene:
    """What is on screen during [t_start, t_end) seconds."""

    t_start: float
    t_end: float
    background: str
    objects: list[Obj]
    text: str | None = None

    def shows(self, colour: str, shape: str) -> bool:
        return any(o.combo == (colour, shape) for o in self.objects)

    def progress(self, t: float) -> float:
        """Where ``t`` falls in the scene, 0 at its start, clipped to [0, 1]."""
        return min(1.0, max(0.0, (t - self.t_start) / (self.t_end - self.t_start)))


@dataclass
class World:
    """The ground truth of one video: its frame geometry and its scenes in time order."""

    seed: int
    duration_s: float
    fps: float
    width: int
    height: int
    scenes: list[Scene]

    @cached_property
    def _starts(self) -> list[float]:
        return [s.t_start for s in self.scenes]

    def scene_index_at(self, t: float) -> int:
        """Index of the scene on screen at ``t`` (times outside the video are clamped)."""
        return min(len(self.scenes) - 1, max(0, bisect.bisect_right(self._starts, t) - 1))

    def scene_at(self, t: float) -> Scene:
        return self.scenes[self.scene_index_at(t)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> World:
        scenes = [
            Scene(**{**s, "objects": [Obj(**o) for o in s["objects"]]}) for s in data["scenes"]
        ]
        return cls(**{**data, "scenes": scenes})

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> World:
        return cls.from_dict(json.loads(text))


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _layout(rng: np.random.Generator, motion: str, slot: int, n: int) -> tuple[float, float]:
    """Mid-scene centre of object ``slot`` of ``n``: its own vertical band, room to move."""
    band = 1.0 / n
    x = (slot + 0.5) * band
    if motion not in ("left", "right"):
        x += float(rng.uniform(-0.1, 0.1)) * band
    y = 0.5 if motion in ("up", "down") else 0.5 + float(rng.uniform(-0.12, 0.12))
    return round(x, 3), round(y, 3)


def _random_obj(rng: np.random.Generator, exclude: set[tuple[str, str]], slot: int, n: int) -> Obj:
    while True:
        shape, colour = _pick(rng, SHAPES), _pick(rng, COLOURS)
        if (colour, shape) not in exclude:
            break
    size, motion = _pick(rng, SIZES), _pick(rng, MOTIONS)
    x, y = _layout(rng, motion, slot, n)
    return Obj(shape, colour, size, motion, x, y)


def _scene_bounds(
    rng: np.random.Generator, duration_s: float, scene_seconds: tuple[float, float]
) -> list[tuple[float, float]]:
    """Whole-second scene lengths in ``scene_seconds``; a too-short tail joins its neighbour."""
    lo, hi = math.ceil(scene_seconds[0]), math.floor(scene_seconds[1])
    if lo < 1 or hi < lo:
        raise ValueError(f"scene_seconds {scene_seconds} holds no whole number of seconds >= 1")
    bounds: list[tuple[float, float]] = []
    t = 0.0
    while t < duration_s:
        end = min(duration_s, t + int(rng.integers(lo, hi + 1)))
        bounds.append((t, end))
        t = end
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < lo:
        bounds[-2:] = [(bounds[-2][0], duration_s)]
    return bounds


def _random_scene(
    rng: np.random.Generator,
    bounds: tuple[float, float],
    previous: Scene | None,
    banned: set[tuple[str, str]],
    two_object_prob: float,
    text_prob: float,
) -> Scene:
    n = 2 if rng.uniform() < two_object_prob else 1
    exclude = set(banned) | ({o.combo for o in previous.objects} if previous else set())
    objects: list[Obj] = []
    for slot in range(n):
        objects.append(_random_obj(rng, exclude, slot, n))
        exclude.add(objects[-1].combo)
    old_bg = previous.background if previous else None
    background = _pick(rng, [b for b in BACKGROUNDS if b != old_bg])
    text = _pick(rng, TEXT_WORDS) if rng.uniform() < text_prob else None
    return Scene(bounds[0], bounds[1], background, objects, text)


def make_world(
    seed: int,
    duration_s: float,
    scene_seconds: tuple[float, float] = (4, 12),
    needle: Obj | None = None,
    needle_depth: float | None = None,
    *,
    fps: float = 10,
    width: int = 160,
    height: int = 120,
    two_object_prob: float = 0.0,
    text_prob: float = 0.0,
) -> World:
    """A world of ``duration_s`` seconds, the same for the same arguments.

    With a needle, the scene holding ``needle_depth * duration_s`` (0..1; 1 means the last
    scene) shows only the needle, and no other scene shows its (colour, shape). All other
    scenes do not depend on the depth, so a needle grid varies one scene per video."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    if (needle is None) != (needle_depth is None):
        raise ValueError("give both needle and needle_depth, or neither")
    if needle_depth is not None and not 0.0 <= needle_depth <= 1.0:
        raise ValueError(f"needle_depth must be in [0, 1], got {needle_depth}")
    duration_s, rng = float(duration_s), np.random.default_rng(seed)
    banned = {needle.combo} if needle else set()
    scenes: list[Scene] = []
    for bounds in _scene_bounds(rng, duration_s, scene_seconds):
        previous = scenes[-1] if scenes else None
        scenes.append(_random_scene(rng, bounds, previous, banned, two_object_prob, text_prob))
    world = World(int(seed), duration_s, fps, int(width), int(height), scenes)
    if needle is not None:
        at = world.scene_index_at(min(needle_depth * duration_s, scenes[-1].t_start))
        scenes[at].objects = [needle]
    return world


def ground_truth_path(video_path: str | Path) -> Path:
    """Where the ground truth of ``video_path`` lives: ``<video>.world.json`` beside it."""
    video_path = Path(video_path)
    return video_path.with_name(video_path.name + ".world.json")


def write_ground_truth(world: World, path: str | Path) -> Path:
    """Write the world as JSON; a video path (not ending in .json) gets it beside it."""
    path = Path(path)
    if path.suffix != ".json":
        path = ground_truth_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(world.to_json(indent=1))
    return path


def read_ground_truth(path: str | Path) -> World:
    """Read a world written by ``write_ground_truth`` (a video path finds its JSON)."""
    path = Path(path)
    if path.suffix != ".json":
        path = ground_truth_path(path)
    return World.from_json(path.read_text())
