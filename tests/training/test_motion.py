"""Stage 1a: frame-motion labels and the motion module's training (training.motion)."""

from __future__ import annotations

import numpy as np
import torch

from checkpoints.registry import build_default_model
from training.data import build_examples, frame_motions
from training.loop import cache_tokens
from training.motion import motion_accuracy, motion_pairs, pretrain_motion
from training.vision import freeze
from world.scenes import MOTIONS, make_world


def test_frame_motions_label_pairs_within_one_scene_and_skip_the_rest():
    world = make_world(21, 40)  # 40 frames at 1 fps: clips of 16, the last padded
    labels = frame_motions(world, n_clips=3, clip_frames=16)
    assert labels.shape == (3, 16) and labels.dtype == np.int64
    assert (labels[2, 8:] == -1).all()  # padding
    for (clip, t), label in np.ndenumerate(labels):
        k = clip * 16 + t
        if k >= 40:
            continue
        partner = k - 1 if t > 0 else k + 1
        scene = world.scene_index_at(k)
        same = partner < 40 and world.scene_index_at(partner) == scene
        motion = MOTIONS.index(world.scenes[scene].objects[0].motion)
        assert label == (motion if same else -1)
    starts = [int(s.t_start) for s in world.scenes[1:]]
    assert all(labels.flat[k] == -1 for k in starts if k % 16 > 0)  # a cut is no motion
    assert (labels >= 0).sum() > 30


def test_pretrain_motion_trains_the_motion_mlp_and_then_freezes_it():
    torch.manual_seed(0)
    model = build_default_model(0, motion_features=True).train()
    freeze(model.vision)
    examples = build_examples([100, 101, 102], (48.0,), model.clip_frames, model.image_size, 1)
    cache_tokens(model, examples)
    motion = model.streaming.motion
    inputs, labels = motion_pairs(motion, examples, per_world=10)
    assert inputs.shape == (len(labels), 2 * 4 * model.hidden_size) and len(labels) == 30
    inject = motion.inject.weight.clone()
    log, probe = pretrain_motion(motion, examples, steps=60, per_world=40, log_every=59)
    assert [row["step"] for row in log] == [0, 59]
    assert log[-1]["motion_loss"] < log[0]["motion_loss"]
    assert not any(p.requires_grad for p in motion.encoder.parameters())
    assert motion.inject.weight.requires_grad and torch.equal(motion.inject.weight, inject)
    labelled = np.concatenate([ex.motions.reshape(-1) for ex in examples])
    majority = np.bincount(labelled[labelled >= 0]).max() / (labelled >= 0).sum()  # 0.33
    assert motion_accuracy(motion, probe, examples) > majority + 0.3  # the frames it fit
