from __future__ import annotations

import pytest
import torch
from transformers import CLIPConfig, CLIPVisionConfig, SiglipVisionConfig, ViTConfig

from models.vision import VisionBackbone, pooling_grid

TINY = dict(
    image_size=32,
    patch_size=8,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
)


@pytest.mark.parametrize(
    "config",
    [
        ViTConfig(**TINY),
        CLIPVisionConfig(**TINY),
        SiglipVisionConfig(**TINY),
        CLIPConfig(
            vision_config=TINY,
            text_config=dict(
                hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
            ),
        ),
    ],
    ids=["vit", "clip-vision", "siglip-vision", "clip-dual"],
)
def test_families_give_p_tokens_of_size_d(config, make_clips):
    backbone = VisionBackbone(config, frame_tokens=4, hidden_size=48).eval()
    frames = make_clips(1, seed=0, frames=5, size=32)[0]  # (5, 32, 32, 3)
    with torch.inference_mode():
        tokens = backbone(frames)
    assert tokens.shape == (5, 4, 48)
    assert torch.isfinite(tokens).all()
    assert backbone.num_patches == 16  # CLS token (ViT, CLIP) dropped, SigLIP has none


def test_frames_of_another_size_are_resized(make_clips):
    backbone = VisionBackbone(ViTConfig(**TINY), frame_tokens=2, hidden_size=16).eval()
    frames = make_clips(1, seed=1, frames=3, size=50)[0]
    assert backbone.preprocess(frames).shape == (3, 3, 32, 32)
    with torch.inference_mode():
        assert backbone(frames).shape == (3, 2, 16)


def test_preprocess_normalises_to_minus_one_one():
    backbone = VisionBackbone(ViTConfig(**TINY), frame_tokens=2, hidden_size=16)
    frames = torch.tensor([0, 255], dtype=torch.uint8).repeat_interleave(32 * 16 * 3)
    pixels = backbone.preprocess(frames.view(1, 32, 32, 3))
    assert pixels.min().item() == pytest.approx(-1.0) and pixels.max().item() == pytest.approx(1.0)


def test_bad_frame_layout_is_rejected():
    backbone = VisionBackbone(ViTConfig(**TINY), frame_tokens=2, hidden_size=16)
    with pytest.raises(ValueError, match="N, H, W, 3"):
        backbone(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))


def test_pooling_grid_is_closest_to_square():
    assert [pooling_grid(p) for p in (1, 4, 6, 5, 16)] == [(1, 1), (2, 2), (2, 3), (1, 5), (4, 4)]


def test_tokens_are_the_quadrants_of_the_patch_grid(make_clips):
    """P = 4 pools the 4 x 4 patch grid into 2 x 2 quadrants (not 4 horizontal bands), so
    left and right stay apart."""
    backbone = VisionBackbone(ViTConfig(**TINY), frame_tokens=4, hidden_size=48).eval()
    frames = make_clips(1, seed=0, frames=2, size=32)[0]  # (2, 32, 32, 3)
    with torch.inference_mode():
        hidden = backbone.model(pixel_values=backbone.preprocess(frames)).last_hidden_state
        grid = hidden[:, 1:].reshape(2, 4, 4, -1)  # (N, rows, cols, C) after the CLS token
        quadrants = [grid[:, r : r + 2, c : c + 2].mean(dim=(1, 2)) for r in (0, 2) for c in (0, 2)]
        expected = backbone.proj(torch.stack(quadrants, dim=1))  # (N, 4, D)
        assert torch.allclose(backbone(frames), expected, atol=1e-5)
