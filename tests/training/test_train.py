"""The training flow end to end (smoke preset) and the training data it builds."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from flows.train import train_flow
from models.answer import ANSWERER_DIR, AnswererConfig, MemoryAnswerer
from models.vmem import VMemModel
from schemas.train_config import TrainConfig
from training.data import (
    AFTER_LABELS,
    CLIP_LABELS,
    LABEL_GROUPS,
    MOTION_LABELS,
    N_CLIP_LABELS,
    SEEN_LABELS,
    STACK_DEPTH,
    STACK_LABELS,
    build_example,
    clip_labels,
    clip_ranges,
    earlier_only,
    evidence_mask,
    render_clips,
    scene_stack,
    stack_evidence,
    stack_scene_ids,
)
from training.heldout import random_recall
from training.loop import build_models, train_loop
from training.losses import encode_video_clips, select_memories
from world.questions import (
    QA,
    answer_vocabulary,
    earlier_scene_seconds_in_clip,
    make_questions,
)
from world.scenes import make_world


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A throwaway Prefect API (the flow runs as a real Prefect flow)."""
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_HOME", str(tmp_path_factory.mktemp("prefect")))
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with prefect_test_harness(server_startup_timeout=120):
            yield


@pytest.fixture(scope="module")
def smoke_run(prefect_api, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("ckpt") / "smoke"
    return train_flow(TrainConfig.smoke(str(out)))


def test_clips_are_padded_like_the_decode_stage():
    world = make_world(5, 40)
    clips = render_clips(world, clip_frames=16, image_size=32)
    assert clips.shape == (3, 16, 32, 32, 3) and clips.dtype == np.uint8
    assert np.array_equal(clips[2, 8], clips[2, 15])  # frames 40..47 repeat frame 39
    assert clip_ranges(40, 3, 16, 1.0).tolist() == [[0, 16], [16, 32], [32, 40]]


def test_example_targets_fit_the_answerer_vocabulary():
    ex = build_example(7, 120, clip_frames=16, image_size=32)
    assert ex.frames.shape[:2] == (8, 16)
    assert ex.positives.shape == (len(ex.questions), 8)
    words = set(answer_vocabulary())
    assert all(set(a) <= words and 0 < len(a) <= 8 for a in ex.answers)
    qas = make_questions(make_world(7, 120), 7)
    for qa, answer, pos in zip(qas, ex.answers, ex.positives, strict=True):
        assert np.array_equal(pos, evidence_mask(qa, clip_ranges(120, 8, 16, 1.0)))
        if qa.qtype == "localisation":  # clip indices that cover the evidence seconds
            first, last = (int(v) for v in "".join(answer).split("-"))
            t0, t1 = qa.evidence[0]
            assert first * 16 <= t0 and t1 <= (last + 1) * 16 and pos.any()


def test_clip_labels_name_what_each_clip_and_the_one_before_show():
    world = make_world(11, 60)
    ranges = clip_ranges(60, 4, 16, 1.0)
    labels = clip_labels(world, ranges)
    assert labels.shape == (4, N_CLIP_LABELS) and set(np.unique(labels)) <= {0.0, 1.0}
    now, before, _, _, moving = np.split(labels, np.cumsum(LABEL_GROUPS)[:-1], axis=1)
    assert not before[0].any()  # nothing before the first clip
    assert np.array_equal(before[1:], now[:-1])
    scene = world.scene_at(20.0)  # on screen during clip 1 (16-32 s)
    for obj in scene.objects:
        for name in (obj.colour, obj.shape, f"{obj.colour} {obj.shape}"):
            assert now[1, CLIP_LABELS.index(name)] == 1.0
        assert moving[1, MOTION_LABELS.index(f"{obj.colour} {obj.shape} {obj.motion}")]
    assert np.array_equal(moving.sum(axis=1) > 0, now.sum(axis=1) > 0)
    assert build_example(11, 60, 16, 32).labels.shape == (4, N_CLIP_LABELS)


def test_clip_labels_name_each_scene_s_predecessor_and_what_was_seen_so_far():
    world = make_world(12, 120)
    ranges = clip_ranges(120, 8, 16, 1.0)
    _, _, after, seen, _ = np.split(
        clip_labels(world, ranges), np.cumsum(LABEL_GROUPS)[:-1], axis=1
    )
    for i in range(1, len(world.scenes)):
        scene, (prev,) = world.scenes[i], world.scenes[i - 1].objects
        clip = int(scene.t_start // 16)  # the clip where the scene starts
        for obj in scene.objects:
            for p in (prev.colour, prev.shape):
                assert after[clip, AFTER_LABELS.index(f"{obj.colour} {obj.shape} after {p}")]
    assert after.sum(axis=1).max() <= 2 * 2 * 3  # two names per scene, a few scenes per clip
    assert np.all(np.diff(seen, axis=0) >= 0)  # once seen, always seen
    shown = Counter(o.combo for s in world.scenes for o in s.objects)
    expected = {f"{c} {s} seen {n}" for (c, s), k in shown.items() for n in range(1, min(k, 3) + 1)}
    assert {SEEN_LABELS[j] for j in np.flatnonzero(seen[-1])} == expected
    first = world.scenes[0].objects[0]
    assert seen[0, SEEN_LABELS.index(f"{first.colour} {first.shape} seen 1")]
    assert max(shown.values()) >= 2  # the world repeats a pair: counts above 1 are tested


def test_scene_stack_lists_the_latest_scenes_latest_first():
    world = make_world(13, 100)
    ranges = clip_ranges(100, 7, 16, 1.0)  # the last clip: 96-100 s, frames 96..99
    stack = scene_stack(world, ranges)
    assert stack.shape == (7, STACK_DEPTH, len(STACK_LABELS))

    def names(clip, place):
        return {STACK_LABELS[k] for k in np.flatnonzero(stack[clip, place])}

    for clip, last_frame in ((0, 15.0), (3, 63.0), (6, 99.0)):
        latest = world.scene_index_at(last_frame)
        for place in range(STACK_DEPTH):
            if place > latest:  # before the first scene
                assert not names(clip, place)
                continue
            scene = world.scenes[latest - place]
            assert names(clip, place) == {
                n for o in scene.objects for n in (o.colour, o.shape, o.motion)
            }
    # a clip's stack continues the one before: what was latest moves down
    shift = world.scene_index_at(31.0) - world.scene_index_at(15.0)
    assert shift >= 1
    assert np.array_equal(stack[1, shift:], stack[0, : STACK_DEPTH - shift])
    assert build_example(13, 100, 16, 32).stack.shape == (7, STACK_DEPTH, len(STACK_LABELS))


def test_random_recall_baseline():
    positives = np.array([[True, False, False, False], [False, False, False, False]])
    assert random_recall(positives, 2) == pytest.approx(0.5)


def test_config_is_frozen():
    cfg = TrainConfig.smoke("x")
    with pytest.raises(ValueError):
        cfg.steps = 3  # type: ignore[misc]


def test_smoke_run_writes_a_loadable_checkpoint(smoke_run):
    out = smoke_run
    from pathlib import Path

    folder = Path(out)
    for name in ("config.json", "model.safetensors", "train_config.json", "data_seeds.json"):
        assert (folder / name).is_file(), name
    assert (folder / ANSWERER_DIR / "config.json").is_file()
    assert (folder / ANSWERER_DIR / "model.safetensors").is_file()
    cfg = TrainConfig.model_validate_json((folder / "train_config.json").read_text())
    seeds = json.loads((folder / "data_seeds.json").read_text())
    assert seeds["eval"] == cfg.eval_seeds and set(seeds["train"]) <= set(cfg.train_seeds)

    model = VMemModel.from_pretrained(str(folder)).eval()
    answerer = MemoryAnswerer.from_pretrained(str(folder / ANSWERER_DIR)).eval()
    assert answerer.config.k == cfg.k
    assert answerer.config.k * answerer.config.memory_tokens == cfg.k * model.memory_tokens
    with torch.no_grad():
        memory, indicator = model.encode_clips(torch.zeros(1, 16, 64, 64, 3, dtype=torch.uint8))
        pooled = model.question_encoder.embed(["How many times does a red circle appear?"])
        tokens = memory.repeat(1, cfg.k, 1)  # (1, K*M, D)
        answers = answerer.generate_answers(tokens, pooled)
    assert len(answers) == 1 and torch.isfinite(indicator).all()


def test_smoke_run_loss_goes_down(smoke_run):
    from pathlib import Path

    history = json.loads((Path(smoke_run) / "train_log.json").read_text())
    losses = np.array([row["loss"] for row in history])
    fifth = max(1, len(losses) // 5)
    assert len(losses) == TrainConfig.smoke("x").steps
    assert losses[-fifth:].mean() < losses[:fifth].mean()
    assert all(row["stack"] > 0 for row in history)  # the scene stack trains by default
    metrics = json.loads((Path(smoke_run) / "metrics.json").read_text())
    assert {"recall_cond", "recall_random", "accuracy_counting"} <= set(metrics)


def test_slots_to_clips_reads_a_slot_answer_as_clip_indices():
    from training.heldout import slots_to_clips

    assert slots_to_clips("2 - 3", [4, 12, 13, 20]) == "1 2 - 1 3"
    assert slots_to_clips("1 - 1", [0, 5, -1, -1]) == "0 - 0"
    assert slots_to_clips("3 - 3", [0, 5, -1, -1]) is None  # an empty slot
    assert slots_to_clips("red", [0, 1]) is None


def test_stack_evidence_marks_the_places_holding_the_asked_scenes():
    world = make_world(13, 100)
    ranges = clip_ranges(100, 7, 16, 1.0)
    ids = stack_scene_ids(world, ranges)
    assert ids.shape == (7, STACK_DEPTH)
    latest = world.scene_index_at(15.0)  # the first clip: scenes latest..0, then none
    assert list(ids[0]) == [*range(latest, -1, -1), *[-1] * (STACK_DEPTH - latest - 1)]
    history = next(qa for qa in make_questions(world, 13, per_type=4) if qa.qtype == "history")
    asked = {world.scene_index_at(t0) for t0, _ in history.evidence}
    places = stack_evidence(world, history, ids)
    assert places.shape == ids.shape and places.any()
    assert {int(s) for s in ids[places]} == asked  # every marked place holds an asked scene
    assert not places[ids < 0].any()
    example = build_example(13, 100, 16, 32)
    assert example.stack_evidence.shape == (len(example.questions), 7, STACK_DEPTH)


def test_earlier_scene_seconds_in_clip_is_what_the_named_scene_s_first_clip_shows_of_it():
    def history(before: tuple[float, float], named: tuple[float, float]) -> QA:
        return QA("q", "red", "history", [before, named], 100.0)

    starts = range(0, 100, 16)
    assert earlier_scene_seconds_in_clip(history((14, 27), (27, 35)), starts) == 11  # 16-32
    assert earlier_scene_seconds_in_clip(history((28, 32), (32, 40)), starts) == 0  # boundary
    assert earlier_scene_seconds_in_clip(history((30, 34), (34, 40)), starts) == 2  # 32-48
    assert earlier_scene_seconds_in_clip(history((0, 4), (4, 9)), starts) == 4  # all of it


def test_earlier_only_marks_the_clips_that_show_a_history_question_s_earlier_scene_alone():
    ranges = np.array([[0, 16], [16, 32], [32, 48], [48, 64]], dtype=float)
    history = QA("q", "red", "history", [(10, 32), (32, 40)], 64.0)
    assert earlier_only(history, ranges).tolist() == [True, True, False, False]
    inside = QA("q", "red", "history", [(20, 36), (36, 40)], 64.0)  # both in clip 2
    assert earlier_only(inside, ranges).tolist() == [False, True, False, False]
    counting = QA("q", "2", "counting", [(0, 10), (40, 50)], 64.0)
    assert not earlier_only(counting, ranges).any()
    example = build_example(13, 100, 16, 32)
    assert example.earlier_only.shape == example.positives.shape
    assert not (example.earlier_only & ~example.positives).any()  # evidence clips only
    rows = [i for i, t in enumerate(example.qtypes) if t != "history"]
    assert not example.earlier_only[rows].any()


def test_history_drill_trains_with_the_earlier_scene_s_clips_kept_out(tmp_path):
    cfg = TrainConfig.smoke(str(tmp_path), steps=3, history_drill=1.0, vision_steps=0)
    model, answerer = build_models(cfg)
    examples = [build_example(seed, 100, 16, model.image_size) for seed in (13, 14)]
    assert any(ex.earlier_only.any() for ex in examples)  # something to keep out
    log = train_loop(cfg, model, answerer, examples)
    assert len(log) == 3 and all(np.isfinite(row["loss"]) for row in log)


def test_build_example_keeps_only_the_questions_asked_for():
    kept: list[QA] = []

    def keep(qa: QA) -> bool:
        if qa.qtype == "history":
            kept.append(qa)
        return qa.qtype == "history"

    example = build_example(13, 100, 16, 32, per_type=10**6, keep=keep)
    assert example.questions == [qa.question for qa in kept] and len(kept) > 1
    assert set(example.qtypes) == {"history"}
    assert example.positives.shape == (len(kept), 7) == example.stack_evidence.shape[:2]


def test_evaluate_resets_the_memory_at_every_clip_for_ablation_a(smoke_run, monkeypatch):
    import training.heldout as train

    model = VMemModel.from_pretrained(smoke_run).eval()
    answerer = MemoryAnswerer.from_pretrained(f"{smoke_run}/{ANSWERER_DIR}").eval()
    examples = [build_example(900, 60, model.clip_frames, model.image_size, per_type=2)]
    resets = []

    def spy(model, frames, reset_every_clip=False, detach_every=None):
        resets.append(reset_every_clip)
        return encode_video_clips(model, frames, reset_every_clip, detach_every)

    monkeypatch.setattr(train, "encode_video_clips", spy)
    k = answerer.config.k
    rows: dict[bool, list] = {False: [], True: []}
    for reset in (False, True):
        train.evaluate(model, answerer, examples, k=k, record=rows[reset], reset_every_clip=reset)
    assert resets == [False, True]
    assert [r[:2] for r in rows[True]] == [r[:2] for r in rows[False]]  # the same questions
    carried = encode_video_clips(model, torch.from_numpy(examples[0].frames))[0]
    alone = encode_video_clips(model, torch.from_numpy(examples[0].frames), True)[0]
    assert torch.allclose(carried[0], alone[0]) and not torch.allclose(carried[1:], alone[1:])


def test_oracle_evaluation_answers_from_the_evidence_clips(smoke_run, monkeypatch):
    import training.heldout as train

    model = VMemModel.from_pretrained(smoke_run).eval()
    answerer = MemoryAnswerer.from_pretrained(f"{smoke_run}/{ANSWERER_DIR}").eval()
    examples = [build_example(900, 60, model.clip_frames, model.image_size, per_type=2)]
    picked = []

    def spy(*args, **kwargs):
        out = select_memories(*args, **kwargs)
        picked.append(out[1])
        return out

    monkeypatch.setattr(train, "select_memories", spy)
    k = answerer.config.k
    plain = train.evaluate(model, answerer, examples, k=k)
    forced = train.evaluate(model, answerer, examples, k=k, oracle=True)
    assert set(plain) == set(forced) and "accuracy_localisation" in forced
    positives = torch.from_numpy(examples[0].positives)  # (questions, N)
    hits = positives.gather(1, picked[1].clamp_min(0)).sum(dim=1)  # the oracle run's picks
    assert torch.equal(hits, positives.sum(dim=1).clamp_max(k))  # every evidence clip fits in


def test_evaluate_records_every_answer_it_scores(smoke_run):
    from training.heldout import evaluate

    model = VMemModel.from_pretrained(smoke_run).eval()
    answerer = MemoryAnswerer.from_pretrained(f"{smoke_run}/{ANSWERER_DIR}").eval()
    examples = [build_example(901, 60, model.clip_frames, model.image_size, per_type=2)]
    rows = []
    metrics = evaluate(model, answerer, examples, k=answerer.config.k, record=rows)
    asked = list(zip(examples[0].qtypes, examples[0].questions, strict=True))
    assert [(t, q) for t, q, _, _ in rows] == asked
    assert [want for *_, want in rows] == [" ".join(a) for a in examples[0].answers]
    for qtype in set(examples[0].qtypes):  # the recorded answers are the ones scored
        right = [got == want for t, _, got, want in rows if t == qtype]
        assert metrics[f"accuracy_{qtype}"] == sum(right) / len(right)


def test_batch_tensors_mark_the_types_that_align_every_evidence_clip():
    from training.loop import batch_tensors

    answerer = MemoryAnswerer(
        AnswererConfig(vocab=answer_vocabulary(), k=2, memory_tokens=3, memory_dim=16)
    )
    batch = [build_example(seed, 60, 16, 32, per_type=2) for seed in (21, 22)]
    types = [t for ex in batch for t in ex.qtypes]
    marks = batch_tensors(batch, answerer, ["localisation", "counting"])["align_each_clip"]
    assert marks.tolist() == [t in ("localisation", "counting") for t in types]
    assert sum(marks.tolist()) == 8  # 2 videos x 2 types x 2 questions
    assert not batch_tensors(batch, answerer)["align_each_clip"].any()
    assert TrainConfig().align_each_clip == ["localisation", "counting"]
    with pytest.raises(ValueError):
        TrainConfig(align_each_clip=["colour"])
