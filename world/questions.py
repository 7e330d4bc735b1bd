"""Questions with answers, derived from a world's ground truth (``world.scenes``).

Four types, each with several phrasings per template, and only well-posed questions (one
right answer): localisation ("when does a red circle move left?" -> "t0-t1"), history (the
object just before a given one: needs memory across clips), counting (scenes showing a
colour and shape) and ordering (which of two objects came first). Answers are short
canonical strings; ``answer_vocabulary`` lists every token they can hold.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from world.scenes import COLOURS, SHAPES, SIZES, Obj, Scene, World

MOTION_PHRASES = {  # motion -> (verb phrase, gerund phrase)
    "left": ("move left", "moving left"),
    "right": ("move right", "moving right"),
    "up": ("move up", "moving up"),
    "down": ("move down", "moving down"),
    "still": ("stand still", "standing still"),
    "grow": ("grow", "growing"),
    "shrink": ("shrink", "shrinking"),
}

# {a}: "a"/"an" before the colour; {x}: "colour shape"; {verb}/{ing}: the motion phrases.
PHRASINGS = {
    "localisation": (
        "When does {a} {x} {verb}?",
        "At what time is {a} {x} {ing}?",
        "In which time range do we see {a} {x} {ing}?",
        "Find the segment where {a} {x} is {ing}.",
    ),
    "history_colour": (
        "What colour was the shape shown just before the {x} appeared?",
        "Right before the {x} showed up, what colour was the object on screen?",
        "Which colour did the object have that came just before the {x}?",
    ),
    "history_shape": (
        "What shape was shown just before the {x} appeared?",
        "Just before the {x} appeared, which shape was on screen?",
        "Which shape came right before the {x}?",
    ),
    "counting": (
        "How many times does {a} {x} appear?",
        "How often is {a} {x} shown?",
        "In how many scenes does {a} {x} appear?",
        "Count the appearances of {a} {x}.",
    ),
    "ordering": (
        "Which came first, the {x} or the {y}?",
        "Did the {x} or the {y} appear earlier?",
        "Which was shown before the other: the {x} or the {y}?",
    ),
}


@dataclass
class QA:
    """A question, its canonical answer, and the scene time range(s) that hold the answer."""

    question: str
    answer: str
    qtype: str  # one of QTYPES
    evidence: list[tuple[float, float]]  # scene [t_start, t_end) ranges, in time order
    video_seconds: float

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> QA:
        return cls(**{**data, "evidence": [tuple(e) for e in data["evidence"]]})


def format_seconds(t: float) -> str:
    """Whole seconds as an integer ("12"), otherwise up to two decimals ("59.5")."""
    return str(int(t)) if float(t).is_integer() else f"{t:.2f}".rstrip("0")


def time_range(scene: Scene) -> str:
    return f"{format_seconds(scene.t_start)}-{format_seconds(scene.t_end)}"


def _span(scene: Scene) -> tuple[float, float]:
    return (scene.t_start, scene.t_end)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _phrase(rng: np.random.Generator, template: str, obj: Obj | None = None, **names) -> str:
    """One phrasing of ``template``, picked by ``rng``; ``obj`` fills {a}, {x}, {verb}, {ing}."""
    options = PHRASINGS[template]
    if obj is not None:
        verb, ing = MOTION_PHRASES[obj.motion]
        names = {"a": _article(obj.colour), "x": obj.describe(), "verb": verb, "ing": ing}
    return options[int(rng.integers(len(options)))].format(**names)


def _scenes_by(world: World, key) -> dict[tuple, list[int]]:
    """Scene indices per key(obj), each scene listed once per key."""
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, scene in enumerate(world.scenes):
        for k in dict.fromkeys(key(o) for o in scene.objects):
            index[k].append(i)
    return index


def _motion_key(o: Obj) -> tuple[str, str, str]:
    return (o.colour, o.shape, o.motion)


def _localisation(world: World, rng: np.random.Generator) -> list[QA]:
    once = [(k, i[0]) for k, i in _scenes_by(world, _motion_key).items() if len(i) == 1]
    out = []
    for (colour, shape, motion), i in once:
        scene = world.scenes[i]
        question = _phrase(rng, "localisation", Obj(shape, colour, motion=motion))
        evidence = [_span(scene)]
        out.append(QA(question, time_range(scene), "localisation", evidence, world.duration_s))
    return out


def _unique_objects(world: World) -> list[tuple[int, Obj, bool]]:
    """(scene index, object, named with its motion) for each object that one name pins down:
    its colour and shape when they occur in one scene only, else with its motion added."""
    by_combo = _scenes_by(world, lambda o: o.combo)
    by_motion = _scenes_by(world, _motion_key)
    out = []
    for i, scene in enumerate(world.scenes):
        for o in scene.objects:
            if len(by_combo[o.combo]) == 1 or len(by_motion[_motion_key(o)]) == 1:
                out.append((i, o, len(by_combo[o.combo]) > 1))
    return out


def _name(obj: Obj, with_motion: bool) -> str:
    return f"{obj.describe()} {MOTION_PHRASES[obj.motion][1]}" if with_motion else obj.describe()


def _history(world: World, rng: np.random.Generator) -> list[QA]:
    out = []
    for i, obj, with_motion in _unique_objects(world):
        if i == 0 or len(world.scenes[i - 1].objects) != 1:
            continue
        before = world.scenes[i - 1].objects[0]
        ask_colour = rng.uniform() < 0.5
        template = "history_colour" if ask_colour else "history_shape"
        question = _phrase(rng, template, x=_name(obj, with_motion))
        answer = before.colour if ask_colour else before.shape
        evidence = [_span(world.scenes[i - 1]), _span(world.scenes[i])]
        out.append(QA(question, answer, "history", evidence, world.duration_s))
    return out


def _counting(world: World, rng: np.random.Generator) -> list[QA]:
    index = _scenes_by(world, lambda o: o.combo)
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in index]
    rng.shuffle(absent)
    combos = list(index) + absent[: max(1, len(index) // 4)]  # a few zero counts
    out = []
    for colour, shape in combos:
        idx = index.get((colour, shape), [])
        question = _phrase(rng, "counting", Obj(shape, colour))
        evidence = [_span(world.scenes[i]) for i in idx]
        out.append(QA(question, str(len(idx)), "counting", evidence, world.duration_s))
    return out


def _ordering(world: World, rng: np.random.Generator, limit: int) -> list[QA]:
    """Pairs of uniquely named objects in different scenes with different colour and shape,
    so that the answer ("colour shape" of the earlier one) is unambiguous."""
    unique = _unique_objects(world)
    pairs = [
        (a, b)
        for n, a in enumerate(unique)
        for b in unique[n + 1 :]
        if a[0] != b[0] and a[1].combo != b[1].combo
    ]
    out = []
    for p in rng.permutation(len(pairs))[:limit]:
        first, second = pairs[p]  # already in time order
        x, y = (first, second) if rng.uniform() < 0.5 else (second, first)
        question = _phrase(rng, "ordering", x=_name(*x[1:]), y=_name(*y[1:]))
        evidence = [_span(world.scenes[first[0]]), _span(world.scenes[second[0]])]
        out.append(QA(question, first[1].describe(), "ordering", evidence, world.duration_s))
    return out


def _sample(rng: np.random.Generator, items: list[QA], n: int) -> list[QA]:
    return [items[i] for i in sorted(rng.permutation(len(items))[:n])]


def make_questions(
    world: World, rng_or_seed: np.random.Generator | int, per_type: int = 4
) -> list[QA]:
    """Up to ``per_type`` well-posed questions of each type (fewer when the world lacks them)."""
    rng = np.random.default_rng(rng_or_seed)
    return (
        _sample(rng, _localisation(world, rng), per_type)
        + _sample(rng, _history(world, rng), per_type)
        + _sample(rng, _counting(world, rng), per_type)
        + _ordering(world, rng, per_type)
    )


def overlapping(spans: Iterable[tuple[float, float]], ranges) -> np.ndarray:
    """(N,) bool: which time ranges (``ranges``: (N, 2) seconds, e.g. clips) overlap any of
    the (t0, t1) ``spans`` (e.g. a question's evidence); touching ends do not overlap."""
    ranges = np.asarray(ranges).reshape(-1, 2)
    mask = np.zeros(len(ranges), dtype=bool)
    for t0, t1 in spans:
        mask |= (ranges[:, 0] < t1) & (ranges[:, 1] > t0)
    return mask


def earlier_scene_seconds_in_clip(qa: QA, clip_starts: Iterable[float]) -> float:
    """Seconds of a history question's earlier scene (its first evidence span) inside the
    clip where the named scene (its last span) starts, clips starting at ``clip_starts``.
    0: the earlier scene lies wholly in earlier clips, so only the memory carried into that
    clip holds it (the named scene starts on a clip boundary)."""
    (before_start, before_end), (named_start, _) = qa.evidence[0], qa.evidence[-1]
    clip_start = max((t for t in clip_starts if t <= named_start + 1e-6), default=0.0)
    return round(max(0.0, min(named_start - clip_start, before_end - before_start)), 6)


def needle_question(world: World, needle: Obj, rng_or_seed: np.random.Generator | int = 0) -> QA:
    """The localisation question that asks for the needle's scene."""
    idx = [i for i, s in enumerate(world.scenes) if s.shows(*needle.combo)]
    if len(idx) != 1:
        raise ValueError(f"the needle {needle.describe()} is in {len(idx)} scenes, not 1")
    scene = world.scenes[idx[0]]
    question = _phrase(np.random.default_rng(rng_or_seed), "localisation", needle)
    return QA(question, time_range(scene), "localisation", [_span(scene)], world.duration_s)


def answer_vocabulary() -> list[str]:
    """Every token an answer can hold: colours, shapes, sizes, digits, "-" and "."."""
    return [*COLOURS, *SHAPES, *SIZES, *"0123456789", "-", "."]


def tokenize_answer(answer: str) -> list[str]:
    """Split an answer into vocabulary tokens: words whole, numbers digit by digit."""
    return re.findall(r"[a-z]+|[0-9]|[-.]", answer)
