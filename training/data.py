"""Training examples from procedural worlds: clips of rendered frames, questions, targets.

Frames are rendered directly (no mp4), as ingest would see them (``ingest_view``), and
sampled as ingest samples them: frame k at t = k / fps, grouped into clips of T frames,
the short last clip padded by repeating its last frame. A clip is a positive for a
question when its time range overlaps one of the question's evidence ranges.

Localisation answers are time ranges in seconds ("37-45"). The answerer reads memories,
not timestamps: it answers with the selected slots that hold the evidence ("2 - 3", see
``models.answer.slot_answer_words``, set per step after selection), whatever the video's
length, and the query stage maps slots to their clips' seconds. Here the reference is
the first and last clip indices that overlap the evidence ("1 4 - 1 5"), what a right
slot answer must point at.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from models.motion import pair_frame
from schemas.train_config import STACK_DEPTH
from world.questions import QA, make_questions, overlapping, tokenize_answer
from world.render import ingest_view
from world.scenes import COLOURS, MOTIONS, SHAPES, World, make_world


@dataclass
class VideoExample:
    """One world, ready to train on."""

    seed: int
    duration_s: float
    frames: np.ndarray | None  # (N, T, S, S, 3) uint8; None once ``tokens`` are cached
    questions: list[str]
    answers: list[list[str]]  # answer words per question (the answerer's targets)
    positives: np.ndarray  # (n_questions, N) bool
    qtypes: list[str]
    labels: np.ndarray | None = None  # (N, C) float32 clip content (``clip_labels``)
    stack: np.ndarray | None = None  # (N, STACK_DEPTH, L) float32 latest scenes (``scene_stack``)
    # (n_questions, N, STACK_DEPTH) bool: stack places holding each question's evidence
    stack_evidence: np.ndarray | None = None
    # (N, STACK_DEPTH) bool: places whose scene ended before the clip (``stack_carried``)
    stack_carried: np.ndarray | None = None
    # (N, T) int64 index in MOTIONS of each frame's motion since its pair frame, -1 where the
    # pair crosses a scene change or the clip's padding (``frame_motions``)
    motions: np.ndarray | None = None
    tokens: np.ndarray | None = None  # (N, T*P, D) float32 frame tokens of a frozen backbone
    pooled: np.ndarray | None = None  # (n_questions, H) float32 of a frozen question encoder
    # (n_questions, SELECTION_PARTS, H) float32: the same of each question's selection queries
    part_pooled: np.ndarray | None = None
    # (n_questions, N) bool: a history question's clips that show its earlier scene but not
    # the named one (``earlier_only``); False for the other types
    earlier_only: np.ndarray | None = None

    @property
    def n_clips(self) -> int:
        return (self.frames if self.tokens is None else self.tokens).shape[0]


def clip_ranges(duration_s: float, n_clips: int, clip_frames: int, fps: float) -> np.ndarray:
    """[t_start, t_end) of each clip: (N, 2) seconds, the last one ending at the duration."""
    starts = np.arange(n_clips) * clip_frames / fps
    ends = np.minimum(starts + clip_frames / fps, duration_s)
    return np.stack([starts, ends], axis=1)


def render_clips(world, clip_frames: int, image_size: int, fps: float = 1.0) -> np.ndarray:
    """Frames at k / fps grouped into clips, the last padded: (N, T, S, S, 3) uint8."""
    n_frames = max(1, math.ceil(world.duration_s * fps - 1e-9))
    frames = [ingest_view(world, k / fps, image_size) for k in range(n_frames)]
    n_clips = math.ceil(n_frames / clip_frames)
    frames += [frames[-1]] * (n_clips * clip_frames - n_frames)
    return np.stack(frames).reshape(n_clips, clip_frames, image_size, image_size, 3)


COMBOS = [(c, s) for c in COLOURS for s in SHAPES]
CLIP_LABELS = [*COLOURS, *SHAPES, *(f"{c} {s}" for c, s in COMBOS)]
# "after" labels: a colour-shape pair seen in the clip, with the colour or the shape of the
# single object of the scene just before its scene (what history questions ask)
AFTER_LABELS = [f"{c} {s} after {p}" for c, s in COMBOS for p in (*COLOURS, *SHAPES)]
SEEN_COUNTS = (1, 2, 3)  # "seen at least n times" (ordinal counts of scenes so far)
SEEN_LABELS = [f"{c} {s} seen {n}" for c, s in COMBOS for n in SEEN_COUNTS]
MOTION_LABELS = [f"{c} {s} {m}" for c, s in COMBOS for m in MOTIONS]  # what localisation asks
LABEL_GROUPS = tuple(
    len(g) for g in (CLIP_LABELS, CLIP_LABELS, AFTER_LABELS, SEEN_LABELS, MOTION_LABELS)
)
N_CLIP_LABELS = sum(LABEL_GROUPS)
# the scene stack: what each of the latest scenes up to a clip's end shows, latest first
STACK_LABELS = [*COLOURS, *SHAPES, *MOTIONS]


def frame_motions(world: World, n_clips: int, clip_frames: int, fps: float = 1.0) -> np.ndarray:
    """(N, T) index in MOTIONS of the object's motion between each frame and its
    ``models.motion.pair_frame`` in the clip, -1 where the two frames show different scenes
    or one is padding."""
    n_frames = max(1, math.ceil(world.duration_s * fps - 1e-9))
    out = np.full((n_clips, clip_frames), -1, dtype=np.int64)
    for k in range(min(n_frames, n_clips * clip_frames)):
        clip, t = divmod(k, clip_frames)
        partner = clip * clip_frames + pair_frame(t)
        if partner >= n_frames or pair_frame(t) >= clip_frames:
            continue
        scene = world.scene_index_at(k / fps)
        if scene == world.scene_index_at(partner / fps):
            out[clip, t] = MOTIONS.index(world.scenes[scene].objects[0].motion)
    return out


def clip_labels(world: World, ranges: np.ndarray) -> np.ndarray:
    """(N, sum(LABEL_GROUPS)) multi-hot free auxiliary targets of each clip, in five groups:
    ``CLIP_LABELS`` (colours, shapes, colour-shape pairs) of the objects on screen during the
    clip; the same for the clip before (zeros for the first); ``AFTER_LABELS`` of the scenes
    the clip shows (their predecessor, possibly in an earlier clip, which only the carried
    memory knows); ``SEEN_LABELS``: the pairs shown in at least 1, 2, 3 scenes up to the
    clip's end (what counting asks); ``MOTION_LABELS``: the pairs on screen with their
    motion."""
    index = {name: i for i, name in enumerate(CLIP_LABELS)}
    after_index = {name: i for i, name in enumerate(AFTER_LABELS)}
    now = np.zeros((len(ranges), len(CLIP_LABELS)), dtype=np.float32)
    after = np.zeros((len(ranges), len(AFTER_LABELS)), dtype=np.float32)
    starts = np.zeros((len(ranges), len(COMBOS)), dtype=np.float32)  # scenes first shown
    moving = np.zeros((len(ranges), len(MOTION_LABELS)), dtype=np.float32)
    for i, scene in enumerate(world.scenes):
        rows = (ranges[:, 0] < scene.t_end) & (ranges[:, 1] > scene.t_start)
        before = world.scenes[i - 1].objects if i > 0 else []
        for obj in scene.objects:
            for name in (obj.colour, obj.shape, f"{obj.colour} {obj.shape}"):
                now[rows, index[name]] = 1.0
            moving[rows, MOTION_LABELS.index(f"{obj.colour} {obj.shape} {obj.motion}")] = 1.0
            if rows.any():
                starts[np.argmax(rows), COMBOS.index(obj.combo)] += 1.0
            if len(before) == 1:
                for p in (before[0].colour, before[0].shape):
                    after[rows, after_index[f"{obj.colour} {obj.shape} after {p}"]] = 1.0
    previous = np.concatenate([np.zeros_like(now[:1]), now[:-1]])
    counts = np.cumsum(starts, axis=0)[..., None]  # (N, combos, 1)
    seen = (counts >= np.array(SEEN_COUNTS)).reshape(len(ranges), -1).astype(np.float32)
    return np.concatenate([now, previous, after, seen, moving], axis=1)


def stack_scene_ids(world: World, ranges: np.ndarray, fps: float = 1.0) -> np.ndarray:
    """(N, STACK_DEPTH) int: the index of the j-th latest scene at each clip's last frame
    (j = 0: the scene then on screen), -1 before the video's first scene."""
    out = np.full((len(ranges), STACK_DEPTH), -1, dtype=np.int64)
    for i, (start, end) in enumerate(ranges):
        last_frame = max(start, (math.ceil(end * fps - 1e-9) - 1) / fps)
        latest = world.scene_index_at(last_frame)
        depth = min(STACK_DEPTH, latest + 1)
        out[i, :depth] = latest - np.arange(depth)
    return out


def scene_stack(world: World, ranges: np.ndarray, fps: float = 1.0) -> np.ndarray:
    """(N, STACK_DEPTH, len(STACK_LABELS)) multi-hot: row j of clip i holds the colours,
    shapes and motions of the j-th latest scene at the clip's last frame (0: the scene then on
    screen); zeros before the video's first scene. Scenes that ended in earlier clips are
    known only through the carried memory; a shared head reading memory token j as scene j
    teaches the memory one code for every scene, so "just before X" is the token after X's."""
    return stack_labels(world, stack_scene_ids(world, ranges, fps))


def stack_carried(world: World, ids: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """(N, STACK_DEPTH) bool: the stack places (``stack_scene_ids``) whose scene ended at or
    before the clip's start, so that only the memory carried into the clip holds it."""
    ends = np.array([scene.t_end for scene in world.scenes])
    return (ids >= 0) & (ends[ids.clip(min=0)] <= ranges[:, :1] + 1e-9)


def stack_labels(world: World, ids: np.ndarray) -> np.ndarray:
    """``scene_stack`` of the scene indices ``ids`` (``stack_scene_ids``)."""
    index = {name: i for i, name in enumerate(STACK_LABELS)}
    out = np.zeros((*ids.shape, len(STACK_LABELS)), dtype=np.float32)
    for (i, j), scene in np.ndenumerate(ids):
        if scene < 0:
            continue
        for obj in world.scenes[scene].objects:
            for name in (obj.colour, obj.shape, obj.motion):
                out[i, j, index[name]] = 1.0
    return out


def stack_evidence(world: World, qa: QA, stack_ids: np.ndarray) -> np.ndarray:
    """(N, STACK_DEPTH) bool: the stack places (``stack_scene_ids``) holding a scene of the
    question's evidence: where a memory trained on ``scene_stack`` keeps what it asks."""
    scenes = [world.scene_index_at(t0) for t0, _ in qa.evidence]
    return np.isin(stack_ids, scenes) & (stack_ids >= 0)


def evidence_mask(qa: QA, ranges: np.ndarray) -> np.ndarray:
    """(N,) bool: clips overlapping any evidence range."""
    return overlapping(qa.evidence, ranges)


def earlier_only(qa: QA, ranges: np.ndarray) -> np.ndarray:
    """(N,) bool: for a history question (evidence: the earlier scene, then the named one),
    the clips overlapping the earlier scene but not the named one; all False otherwise."""
    if qa.qtype != "history" or len(qa.evidence) != 2:
        return np.zeros(len(ranges), dtype=bool)
    return overlapping(qa.evidence[:1], ranges) & ~overlapping(qa.evidence[1:], ranges)


def answer_words(qa: QA, positives: np.ndarray) -> list[str]:
    """The reference answer: clip indices for localisation (training replaces them by slot
    numbers after selection), the answer's words otherwise."""
    if qa.qtype == "localisation":
        clips = np.flatnonzero(positives)
        return [*str(clips[0]), "-", *str(clips[-1])]
    return tokenize_answer(qa.answer)


def build_example(
    seed: int,
    duration_s: float,
    clip_frames: int,
    image_size: int,
    fps: float = 1.0,
    per_type: int = 4,
    keep: Callable[[QA], bool] | None = None,
) -> VideoExample:
    """The world of ``seed`` (``duration_s`` long), its clips, questions and targets;
    ``keep``: only the questions it accepts."""
    world = make_world(seed, duration_s)
    frames = render_clips(world, clip_frames, image_size, fps)
    ranges = clip_ranges(world.duration_s, len(frames), clip_frames, fps)
    qas = [qa for qa in make_questions(world, seed, per_type=per_type) if keep is None or keep(qa)]
    masks = [evidence_mask(qa, ranges) for qa in qas]
    stack_ids = stack_scene_ids(world, ranges, fps)
    places = [stack_evidence(world, qa, stack_ids) for qa in qas]
    return VideoExample(
        seed=seed,
        duration_s=world.duration_s,
        frames=frames,
        questions=[qa.question for qa in qas],
        answers=[answer_words(qa, m) for qa, m in zip(qas, masks, strict=True)],
        positives=np.stack(masks) if masks else np.zeros((0, len(frames)), dtype=bool),
        qtypes=[qa.qtype for qa in qas],
        labels=clip_labels(world, ranges),
        motions=frame_motions(world, len(frames), clip_frames, fps),
        stack=stack_labels(world, stack_ids),
        stack_carried=stack_carried(world, stack_ids, ranges),
        stack_evidence=(
            np.stack(places) if places else np.zeros((0, *stack_ids.shape), dtype=bool)
        ),
        earlier_only=(
            np.stack([earlier_only(qa, ranges) for qa in qas])
            if qas
            else np.zeros((0, len(frames)), dtype=bool)
        ),
    )


def duration_for(seed: int, durations: tuple[float, ...]) -> float:
    """Durations cycle over seeds, so every duration group gets examples."""
    return float(durations[seed % len(durations)])


def build_examples(
    seeds: list[int],
    durations: tuple[float, ...],
    clip_frames: int,
    image_size: int,
    per_type: int = 4,
    keep: Callable[[QA], bool] | None = None,
) -> list[VideoExample]:
    """One example per seed (worlds without questions are dropped)."""
    out = []
    for seed in seeds:
        ex = build_example(
            seed, duration_for(seed, durations), clip_frames, image_size, 1.0, per_type, keep
        )
        if ex.questions:
            out.append(ex)
    return out


def group_by_clips(examples: list[VideoExample]) -> dict[int, list[VideoExample]]:
    """Examples with the same clip count stack into one batch of videos."""
    groups: dict[int, list[VideoExample]] = defaultdict(list)
    for ex in examples:
        groups[ex.n_clips].append(ex)
    return dict(groups)


def sample_batch(
    groups: dict[int, list[VideoExample]], videos: int, rng: np.random.Generator
) -> list[VideoExample]:
    """Up to ``videos`` examples of one clip count, the group drawn by its size."""
    keys = sorted(groups)
    sizes = np.array([len(groups[k]) for k in keys], dtype=float)
    group = groups[keys[int(rng.choice(len(keys), p=sizes / sizes.sum()))]]
    pick = rng.choice(len(group), size=min(videos, len(group)), replace=False)
    return [group[i] for i in pick]
