"""Training stage 1 (frame labels for the vision backbone) and the ingest view of a frame."""

from __future__ import annotations

import av
import numpy as np
import torch

from checkpoints.registry import build_default_model
from training.vision import (
    FRAME_LABELS,
    frame_dataset,
    freeze,
    place_bins,
    pretrain_vision,
)
from world.render import ingest_view, render_frame, write_world_video
from world.scenes import make_world


def test_frame_dataset_labels_follow_the_ground_truth():
    frames, labels = frame_dataset([3, 4], 40.0, 32, per_world=5)
    assert frames.shape == (10, 32, 32, 3) and frames.dtype == np.uint8
    assert labels.shape == (10, len(FRAME_LABELS))
    world, rng = make_world(3, 40.0), np.random.default_rng(3)
    t = float(rng.uniform(0.0, 40.0, size=5)[0])
    scene = world.scene_at(t)
    obj = scene.objects[0]
    assert [FRAME_LABELS[k][v] for k, v in zip(FRAME_LABELS, labels[0], strict=True)] == [
        obj.colour, obj.shape, obj.size, scene.background, *place_bins(world, t),
    ]  # fmt: skip
    assert np.array_equal(frames[0], ingest_view(world, t, 32))


def test_place_bins_follow_the_motion():
    world = make_world(5, 120.0)
    scene = next(s for s in world.scenes if s.objects[0].motion in ("left", "right", "up", "down"))
    start = place_bins(world, scene.t_start)
    end = place_bins(world, scene.t_end - 1e-6)
    motion = scene.objects[0].motion
    axis, sign = {"left": (0, -1), "right": (0, 1), "up": (1, -1), "down": (1, 1)}[motion]
    assert (end[axis] - start[axis]) * sign > 0  # the travel crosses at least one cell
    assert all(0 <= v < 5 for v in (*start, *end))


def test_ingest_view_matches_the_decoded_video(tmp_path):
    world = make_world(11, 6.0)
    path = write_world_video(world, tmp_path / "w.mp4")
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 25:  # t = 2.5 s at 10 fps
                decoded = frame.to_ndarray(width=64, height=64, format="rgb24").astype(int)
                break
    ours = np.abs(ingest_view(world, 2.5, 64).astype(int) - decoded).mean()
    square = np.abs(render_frame(world, 2.5, (64, 64)).astype(int) - decoded).mean()
    assert ours < 3.0 and ours < square / 2  # the aspect squeeze and chroma are reproduced


def test_pretrain_vision_learns_and_freeze_stops_gradients():
    torch.manual_seed(0)
    model = build_default_model(0)
    frames, labels = frame_dataset(list(range(20, 28)), 60.0, model.image_size, per_world=8)
    history, probe = pretrain_vision(model.vision, frames, labels, steps=30, batch=32, log_every=29)
    assert history[-1]["vision_loss"] < history[0]["vision_loss"]
    assert len(probe(model.vision(torch.from_numpy(frames[:2])))) == len(FRAME_LABELS)
    freeze(model.vision)
    assert not any(p.requires_grad for p in model.vision.parameters())
    assert not any(name.startswith("vision.probe") for name in model.state_dict())
