"""The frame-motion features of the streaming encoder (models.motion)."""

from __future__ import annotations

import torch

from models.config import VMemModelConfig
from models.motion import FrameMotion, frame_pairs
from models.vmem import VMemModel


def test_frame_pairs_put_each_frame_beside_its_change_since_the_one_before():
    frames = torch.arange(3 * 2 * 1, dtype=torch.float32).view(3, 2, 1) ** 2  # T=3, P=2, D=1
    pairs = frame_pairs(frames.flatten(0, 1).unsqueeze(0), frame_tokens=2)[0]  # (T, 2*P*D)
    assert pairs.shape == (3, 4)
    assert torch.equal(pairs[:, :2], frames.flatten(1))
    assert torch.equal(pairs[1, 2:], (frames[1] - frames[0]).flatten())
    assert torch.equal(pairs[2, 2:], (frames[2] - frames[1]).flatten())
    assert torch.equal(pairs[0, 2:], pairs[1, 2:])  # frame 0 borrows frame 1's change
    still = frame_pairs(torch.ones(1, 6, 1), frame_tokens=2)
    assert not still[..., 2:].any()


def test_a_frame_s_motion_feature_is_shared_by_its_tokens_and_ignores_other_clips():
    torch.manual_seed(0)
    motion = FrameMotion(frame_tokens=4, hidden_size=8)
    clip = torch.randn(2, 5 * 4, 8)
    out = motion(clip)
    assert out.shape == clip.shape
    per_frame = out.view(2, 5, 4, 8)
    assert torch.allclose(per_frame, per_frame[:, :, :1].expand_as(per_frame))
    assert torch.allclose(motion(clip[:1]), out[:1])  # row by row: no state across rows
    assert motion.embed(clip).shape == (2, 5, 8)


def test_a_model_with_motion_features_round_trips_and_depends_on_motion(tmp_path):
    torch.manual_seed(0)
    config = VMemModelConfig(motion_features=True, clip_frames=4, memory_tokens=2)
    model = VMemModel(config).eval()
    assert model.streaming.motion is not None
    assert VMemModel(VMemModelConfig(clip_frames=4)).streaming.motion is None  # off by default
    frames = torch.randint(0, 255, (1, 4, 64, 64, 3), dtype=torch.uint8)
    with torch.no_grad():
        memory, _ = model.encode_clips(frames)
        model.save_pretrained(tmp_path)
        loaded = VMemModel.from_pretrained(tmp_path).eval()
        assert loaded.config.motion_features
        assert torch.allclose(loaded.encode_clips(frames)[0], memory)
        reordered, _ = model.encode_clips(frames.flip(1))  # same frames, other motion
        model.streaming.motion.inject.weight.zero_()
        model.streaming.motion.inject.bias.zero_()
        no_motion, _ = model.encode_clips(frames)
    assert not torch.allclose(no_motion, memory)  # the motion features reach the memory
    assert not torch.allclose(reordered, memory)
