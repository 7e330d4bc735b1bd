from __future__ import annotations

import numpy as np
import pytest
import torch

from checkpoints.registry import build_default_model
from training.data import (
    STACK_DEPTH,
    build_examples,
    clip_ranges,
    stack_carried,
    stack_scene_ids,
)
from training.loop import cache_tokens
from training.stack import pretrain_stack, stack_loss
from training.vision import freeze
from world.scenes import make_world


def test_stack_carried_marks_places_whose_scene_ended_before_the_clip():
    world = make_world(13, 100)
    ranges = clip_ranges(world.duration_s, 7, 16, 1.0)
    ids = stack_scene_ids(world, ranges)
    carried = stack_carried(world, ids, ranges)
    assert carried.shape == (7, STACK_DEPTH) and not carried[:, 0].any()  # on screen now
    for (clip, place), scene in np.ndenumerate(ids):
        ended_before = scene >= 0 and world.scenes[scene].t_end <= ranges[clip, 0]
        assert carried[clip, place] == ended_before
    assert carried.any()


def test_stack_loss_weights_the_carried_places():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.5]]]])  # (B=1, N=1, S=2, L=2)
    labels = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    carried = torch.tensor([[[False, True]]])
    per_place = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, labels, reduction="none"
    ).mean(-1)[0, 0]
    assert stack_loss(logits, labels, carried, 0.0) == pytest.approx(per_place.mean().item())
    weighted = (per_place[0] + 4 * per_place[1]) / 5
    assert stack_loss(logits, labels, carried, 3.0) == pytest.approx(weighted.item())


def test_pretrain_stack_trains_the_streaming_encoder_alone():
    torch.manual_seed(0)
    model = build_default_model(0).train()
    freeze(model.vision)  # as after stage 1
    size = model.image_size
    examples = build_examples([100, 101, 102, 103], (48.0,), model.clip_frames, size, per_type=1)
    vision = {k: v.clone() for k, v in model.vision.state_dict().items()}
    streaming = {k: v.clone() for k, v in model.streaming.state_dict().items()}
    log = pretrain_stack(model, examples, steps=40, depth=4, videos_per_step=2, log_every=39)
    assert [row["step"] for row in log] == [0, 39]
    assert log[-1]["stack_loss"] < log[0]["stack_loss"]
    assert all(torch.equal(v, model.vision.state_dict()[k]) for k, v in vision.items())
    changed = [not torch.equal(v, model.streaming.state_dict()[k]) for k, v in streaming.items()]
    assert any(changed)
    with torch.no_grad():
        cache_tokens(model, examples)  # the joint recipe's case: the frozen backbone's tokens
    assert pretrain_stack(model, examples, steps=2, depth=4, videos_per_step=2)[-1]["step"] == 1
