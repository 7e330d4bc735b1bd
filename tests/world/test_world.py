"""The procedural world: determinism, ground truth, needles, questions, frames and mp4s."""

from __future__ import annotations

import re

import av
import numpy as np
import pytest

from schemas.train_config import QTYPES
from world.questions import (
    MOTION_PHRASES,
    QA,
    answer_vocabulary,
    make_questions,
    needle_question,
    overlapping,
    tokenize_answer,
)
from world.render import (
    TEXT_COLOUR,
    render_frame,
    text_bitmap,
    write_world,
    write_world_once,
)
from world.scenes import (
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    Obj,
    Scene,
    World,
    make_world,
    read_ground_truth,
    write_ground_truth,
)

NEEDLE = Obj("star", "yellow", "large", "left")
_PHRASES = {p: m for m, pair in MOTION_PHRASES.items() for p in pair}
_MENTION = re.compile(
    rf"({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})"
    rf"(?: (?:is )?({'|'.join(sorted(_PHRASES, key=len, reverse=True))})\b)?"
)


@pytest.fixture(scope="module")
def worlds() -> list[World]:
    return [
        make_world(1, 90),
        make_world(2, 600, two_object_prob=0.3),
        make_world(3, 3600, scene_seconds=(3, 9)),
    ]


def _one_object_world(obj: Obj, size=(64, 64), text: str | None = None) -> World:
    return World(0, 10.0, 10, size[0], size[1], [Scene(0.0, 10.0, "black", [obj], text)])


def _mask(img: np.ndarray, colour: str) -> np.ndarray:
    return np.all(img == COLOURS[colour], axis=-1)


def _centroid(mask: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.mean()), float(ys.mean())


# --- the world ------------------------------------------------------------------------


def test_same_seed_same_world_and_frames():
    a, b = make_world(7, 120, text_prob=0.5), make_world(7, 120, text_prob=0.5)
    assert a.to_json() == b.to_json()
    for t in (0.0, 33.3, 119.9):
        assert render_frame(a, t).tobytes() == render_frame(b, t).tobytes()
    assert make_world(8, 120).to_json() != a.to_json()


def test_json_round_trip_keeps_everything():
    world = make_world(5, 300, two_object_prob=0.5, text_prob=0.5, width=96, height=64)
    back = World.from_json(world.to_json())
    assert back == world
    assert [[(o.x, o.y) for o in s.objects] for s in back.scenes] == [
        [(o.x, o.y) for o in s.objects] for s in world.scenes
    ]
    assert any(s.text for s in back.scenes) and any(len(s.objects) == 2 for s in back.scenes)


def test_scenes_tile_the_video_and_follow_the_rules(worlds):
    for world in worlds:
        scenes = world.scenes
        assert scenes[0].t_start == 0 and scenes[-1].t_end == world.duration_s
        for prev, scene in zip(scenes, scenes[1:], strict=False):
            assert scene.t_start == prev.t_end
            assert not {o.combo for o in prev.objects} & {o.combo for o in scene.objects}
            assert scene.background != prev.background
        lengths = [s.t_end - s.t_start for s in scenes]
        assert min(lengths) >= 3 and max(lengths) <= 12 + 9  # a short tail joins its neighbour


def test_palette_colours_are_far_apart():
    objects = np.array(list(COLOURS.values()), float)  # (8, 3)
    backgrounds = np.array(list(BACKGROUNDS.values()), float)  # (8, 3)
    between = np.linalg.norm(objects[:, None] - objects[None], axis=-1)
    assert between[~np.eye(len(objects), dtype=bool)].min() > 90
    assert np.linalg.norm(objects[:, None] - backgrounds[None], axis=-1).min() > 120


def test_world_at_time_finds_the_scene():
    world = make_world(4, 60)
    for scene in world.scenes:
        assert world.scene_at(scene.t_start) is scene
        assert world.scene_at((scene.t_start + scene.t_end) / 2) is scene
    assert world.scene_at(-5) is world.scenes[0] and world.scene_at(1e9) is world.scenes[-1]


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_needle_sits_at_its_depth_and_nowhere_else(depth):
    world = make_world(11, 600, needle=NEEDLE, needle_depth=depth, two_object_prob=0.3)
    showing = [i for i, s in enumerate(world.scenes) if s.shows("yellow", "star")]
    assert len(showing) == 1
    scene = world.scenes[showing[0]]
    assert scene.objects == [NEEDLE]
    assert scene.t_start <= depth * 600 <= scene.t_end
    qa = needle_question(world, NEEDLE)
    assert qa.answer == f"{scene.t_start:g}-{scene.t_end:g}"
    assert qa.evidence == [(scene.t_start, scene.t_end)] and qa.qtype == "localisation"
    assert "yellow star" in qa.question
    img = render_frame(world, (scene.t_start + scene.t_end) / 2, size=(64, 64))
    assert _mask(img, "yellow").sum() > 20


def test_needle_depth_changes_only_the_needle_scene():
    a = make_world(3, 300, needle=NEEDLE, needle_depth=0.1)
    b = make_world(3, 300, needle=NEEDLE, needle_depth=0.9)
    differ = [i for i, (x, y) in enumerate(zip(a.scenes, b.scenes, strict=True)) if x != y]
    needles = [i for w in (a, b) for i, s in enumerate(w.scenes) if s.objects == [NEEDLE]]
    assert differ == needles and len(differ) == 2


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="needle"):
        make_world(0, 60, needle=NEEDLE)
    with pytest.raises(ValueError, match="needle_depth"):
        make_world(0, 60, needle=NEEDLE, needle_depth=1.5)
    with pytest.raises(ValueError, match="colour"):
        Obj("circle", "pink")
    with pytest.raises(ValueError, match="scene_seconds"):
        make_world(0, 60, scene_seconds=(0.2, 0.5))


# --- questions ------------------------------------------------------------------------


def _scenes_with(world: World, colour, shape, motion=None) -> list[int]:
    return [
        i
        for i, s in enumerate(world.scenes)
        if any(o.combo == (colour, shape) and motion in (None, o.motion) for o in s.objects)
    ]


def _mentions(question: str) -> list[tuple[str, str, str | None]]:
    return [(c, s, _PHRASES.get(m)) for c, s, m in _MENTION.findall(question)]


def _check_answer(world: World, qa: QA) -> None:
    """Recompute the answer of ``qa`` from the scenes alone."""
    mentions = _mentions(qa.question)
    if qa.qtype == "localisation":
        found = _scenes_with(world, *mentions[0])
        assert len(found) == 1 and mentions[0][2] is not None
        scene = world.scenes[found[0]]
        assert qa.answer == f"{scene.t_start:g}-{scene.t_end:g}"
    elif qa.qtype == "history":
        found = _scenes_with(world, *mentions[0])
        assert len(found) == 1 and found[0] > 0
        (before,) = world.scenes[found[0] - 1].objects
        assert qa.answer == (before.colour if "colour" in qa.question else before.shape)
    elif qa.qtype == "counting":
        assert qa.answer == str(len(_scenes_with(world, *mentions[0][:2])))
    else:
        assert len(mentions) == 2 and mentions[0][:2] != mentions[1][:2]
        (i,), (j,) = (_scenes_with(world, *m) for m in mentions)
        assert i != j
        first = mentions[0] if i < j else mentions[1]
        assert qa.answer == f"{first[0]} {first[1]}"


def test_every_question_is_well_posed(worlds):
    for seed, world in enumerate(worlds):
        qas = make_questions(world, seed, per_type=6)
        assert {q.qtype for q in qas} == set(QTYPES)
        for qa in qas:
            _check_answer(world, qa)
            starts = [e[0] for e in qa.evidence]
            assert starts == sorted(starts) and qa.video_seconds == world.duration_s
            assert all(world.scene_at(t0).t_end == t1 for t0, t1 in qa.evidence)


def test_questions_are_deterministic_and_round_trip(worlds):
    a, b = make_questions(worlds[1], 3), make_questions(worlds[1], 3)
    assert a == b and [QA.from_dict(q.to_dict()) for q in a] == a
    assert make_questions(worlds[1], 4) != a


def test_phrasings_vary(worlds):
    skeletons: dict[str, set[str]] = {t: set() for t in QTYPES}
    for seed in range(4):
        for qa in make_questions(worlds[1], seed, per_type=10):
            skeletons[qa.qtype].add(re.sub(r"\ban?\b", "A", _MENTION.sub("X", qa.question)))
    assert all(len(s) >= 3 for s in skeletons.values()), skeletons


def test_answers_use_the_answer_vocabulary(worlds):
    vocab = set(answer_vocabulary())
    assert {*COLOURS, *SHAPES, "small", "large", "7", "-"} <= vocab
    for world in worlds:
        for qa in make_questions(world, 0, per_type=8):
            tokens = tokenize_answer(qa.answer)
            assert tokens and set(tokens) <= vocab and "".join(tokens) == qa.answer.replace(" ", "")


def test_overlapping_marks_the_ranges_that_share_time_with_any_span():
    clips = np.array([[0.0, 16.0], [16.0, 32.0], [32.0, 48.0], [48.0, 64.0]])
    spans = [(30.0, 40.0), (60.0, 70.0)]
    assert overlapping(spans, clips).tolist() == [False, True, True, True]
    assert overlapping([(16.0, 32.0)], clips).tolist() == [False, True, False, False]  # ends touch
    assert overlapping([], clips).tolist() == [False] * 4
    assert overlapping(spans, [(35.0, 36.0)]).tolist() == [True]  # one range, as a list
    assert overlapping(spans, []).shape == (0,)


# --- frames ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_still_object_shows_its_colour_at_its_place(shape):
    world = _one_object_world(Obj(shape, "orange", "large", "still", x=0.3, y=0.6))
    img = render_frame(world, 5.0)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    cx, cy = _centroid(_mask(img, "orange"))
    assert abs(cx - 0.3 * 64) < 4 and abs(cy - 0.6 * 64) < 4
    assert (img[0, 0] == (12, 12, 12)).all()  # the "black" background


def test_shapes_differ_and_sizes_scale():
    masks = [_mask(render_frame(_one_object_world(Obj(s, "red")), 5), "red") for s in SHAPES]
    assert len({m.tobytes() for m in masks}) == len(SHAPES)
    small = _mask(render_frame(_one_object_world(Obj("circle", "red", "small")), 5), "red")
    assert small.sum() < 0.5 * masks[0].sum()


@pytest.mark.parametrize(
    ("motion", "axis", "sign"), [("left", 0, -1), ("right", 0, 1), ("up", 1, -1), ("down", 1, 1)]
)
def test_centroid_moves_with_the_motion(motion, axis, sign):
    world = _one_object_world(Obj("square", "cyan", "small", motion), size=(96, 64))
    early, late = (_centroid(_mask(render_frame(world, t), "cyan")) for t in (1.0, 9.0))
    assert sign * (late[axis] - early[axis]) > 10
    assert abs(late[1 - axis] - early[1 - axis]) < 1


@pytest.mark.parametrize(("motion", "grows"), [("grow", True), ("shrink", False), ("still", None)])
def test_area_follows_grow_and_shrink(motion, grows):
    world = _one_object_world(Obj("circle", "green", "large", motion))
    early, late = (_mask(render_frame(world, t), "green").sum() for t in (1.0, 9.0))
    if grows is None:
        assert early == late
    else:
        assert (late > 1.5 * early) if grows else (early > 1.5 * late)


def test_render_size_override_and_all_motions_fit():
    for motion in MOTIONS:
        world = _one_object_world(Obj("diamond", "white", "large", motion), size=(320, 240))
        for t in (0.0, 5.0, 9.99):
            assert _mask(render_frame(world, t, size=(64, 64)), "white").sum() > 30


def test_text_is_drawn_near_the_bottom():
    world = _one_object_world(Obj("circle", "red", "small"), size=(160, 120), text="HELLO")
    ink = np.all(render_frame(world, 5.0) == TEXT_COLOUR, axis=-1)
    assert ink.sum() == text_bitmap("HELLO", 3).sum()
    assert np.nonzero(ink)[0].min() > 100
    with pytest.raises(ValueError, match="glyph"):
        text_bitmap("HI!")


# --- files ----------------------------------------------------------------------------


def test_mp4_decodes_to_the_rendered_frames(tmp_path):
    world = make_world(9, 6.0, scene_seconds=(2, 3), fps=10, width=96, height=64)
    video, truth = write_world(world, tmp_path / "w.mp4", gop_seconds=1.0)
    assert truth.name == "w.mp4.world.json"
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height, stream.average_rate) == (96, 64, 10)
        assert float(stream.duration * stream.time_base) == pytest.approx(6.0)
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 60
    for index in (0, 25, 59):
        expected = render_frame(world, index / 10).astype(int)
        assert np.abs(frames[index].astype(int) - expected).mean() < 8
    assert read_ground_truth(video) == world == read_ground_truth(truth)


def test_ground_truth_file_round_trips(tmp_path):
    world = make_world(2, 45, needle=NEEDLE, needle_depth=0.5)
    path = write_ground_truth(world, tmp_path / "gt.json")
    assert path == tmp_path / "gt.json" and read_ground_truth(path) == world
    assert needle_question(read_ground_truth(path), NEEDLE) == needle_question(world, NEEDLE)


def test_write_world_once_reuses_the_same_world_and_refuses_another(tmp_path):
    path = tmp_path / "world-7.mp4"
    world = make_world(7, 6.0)
    write_world_once(world, path)
    written = path.stat().st_mtime_ns
    assert write_world_once(make_world(7, 6.0), path) == path  # the same world: reused
    assert path.stat().st_mtime_ns == written
    with pytest.raises(ValueError, match="world-7.mp4 holds another world"):
        write_world_once(make_world(7, 8.0), path)  # same name, another length


def test_an_interrupted_world_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    import world.render as world_render

    path, world, frames = tmp_path / "world-8.mp4", make_world(8, 6.0), []
    original = world_render.render_frame

    def render_then_stop(w, t):
        frames.append(t)
        if len(frames) == 3:
            raise KeyboardInterrupt  # as if the run were stopped mid-video
        return original(w, t)

    monkeypatch.setattr(world_render, "render_frame", render_then_stop)
    with pytest.raises(KeyboardInterrupt):
        write_world_once(world, path)
    assert not path.exists() and not list(tmp_path.glob("*.partial"))
    monkeypatch.undo()
    assert write_world_once(world, path) == path  # the next run writes it whole
    assert read_ground_truth(path) == world and path.stat().st_size > 0


def test_write_world_once_names_a_video_without_ground_truth(tmp_path):
    path = tmp_path / "world-9.mp4"
    path.write_bytes(b"half a video")
    with pytest.raises(ValueError, match="world-9.mp4 has no ground truth beside it"):
        write_world_once(make_world(9, 6.0), path)
