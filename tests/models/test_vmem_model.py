from __future__ import annotations

import pytest
import torch
from transformers import (
    CLIPVisionConfig,
    GPT2Config,
    LlamaConfig,
    Qwen2Config,
    SiglipVisionConfig,
    ViTConfig,
)

from models.config import VMemModelConfig
from models.vmem import VMemModel


def test_properties(model):
    assert (model.memory_tokens, model.hidden_size, model.indicator_dim) == (8, 64, 64)
    assert (model.clip_frames, model.image_size) == (16, 64)


def test_encode_shapes_and_unit_indicators(model, make_clips):
    with torch.inference_mode():
        memory, indicator = model.encode_clips(make_clips(3, seed=0))
        questions = model.encode_questions(["who?", "what happens next?"])
    assert memory.shape == (3, 8, 64) and indicator.shape == (3, 64)
    torch.testing.assert_close(indicator.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(questions.norm(dim=-1), torch.ones(2))


def test_memory_is_carried_and_reset(model, make_clips):
    clip1_a, clip1_b, clip2 = make_clips(1, 1), make_clips(1, 2), make_clips(1, 3)
    with torch.inference_mode():
        fresh, _ = model.encode_clips(clip2)  # clip 2 as the start of a video
        mem_a, _ = model.encode_clips(clip1_a)
        mem_b, _ = model.encode_clips(clip1_b)
        after_a, ind_a = model.encode_clips(clip2, mem_a)
        after_b, ind_b = model.encode_clips(clip2, mem_b)
        reset, _ = model.encode_clips(clip2, mem_a, reset=torch.tensor([True]))
        kept, _ = model.encode_clips(clip2, mem_a, reset=torch.tensor([False]))
    assert not torch.allclose(after_a, after_b)  # a different past changes the memory
    assert not torch.allclose(ind_a, ind_b)
    torch.testing.assert_close(reset, fresh)
    torch.testing.assert_close(kept, after_a)


def test_batch_across_videos_equals_one_at_a_time(model, make_clips):
    """Clip t of several videos with their own memories (one restarting) in one pass."""
    clips = make_clips(3, seed=4)
    with torch.inference_mode():
        prev, _ = model.encode_clips(make_clips(3, seed=5))
        reset = torch.tensor([False, True, False])
        memory, indicator = model.encode_clips(clips, prev, reset=reset)
        for row in range(3):
            one_prev = None if reset[row] else prev[row : row + 1]
            mem_row, ind_row = model.encode_clips(clips[row : row + 1], one_prev)
            torch.testing.assert_close(memory[row : row + 1], mem_row, atol=1e-5, rtol=0)
            torch.testing.assert_close(indicator[row : row + 1], ind_row, atol=1e-5, rtol=0)


def test_conditioning_is_identity_at_init(model, make_clips):
    with torch.inference_mode():
        memory, _ = model.encode_clips(make_clips(2, seed=6))
        questions = model.encode_questions(["a cat", "a car"])
        conditioned = model.condition_questions(questions, memory)
    torch.testing.assert_close(conditioned, questions)


def test_save_load_round_trip(model, make_clips, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = VMemModel.from_pretrained(tmp_path).eval()
    clips = make_clips(2, seed=7)
    with torch.inference_mode():
        for a, b in zip(model.encode_clips(clips), loaded.encode_clips(clips), strict=True):
            assert torch.equal(a, b)
        q = ["same question"]
        assert torch.equal(model.encode_questions(q), loaded.encode_questions(q))
    assert loaded.conditioner.out.weight.abs().sum() == 0


def test_wrong_clip_length_is_rejected(model, make_clips):
    with pytest.raises(ValueError, match="frames must be"):
        model.encode_clips(make_clips(1, seed=0, frames=8))


TINY_VISION = dict(
    image_size=32,
    patch_size=16,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    intermediate_size=64,
)
TINY_LM = dict(vocab_size=16, bos_token_id=0, eos_token_id=0, pad_token_id=0)


@pytest.mark.parametrize(
    ("vision", "encoder"),
    [
        (ViTConfig(**TINY_VISION), GPT2Config(n_embd=32, n_layer=1, n_head=2, **TINY_LM)),
        (
            CLIPVisionConfig(**TINY_VISION),
            LlamaConfig(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=2,
                intermediate_size=64,
                **TINY_LM,
            ),
        ),
        (
            SiglipVisionConfig(**TINY_VISION),
            Qwen2Config(
                hidden_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                num_key_value_heads=1,
                intermediate_size=64,
                **TINY_LM,
            ),
        ),
    ],
    ids=["vit-gpt2", "clip-llama", "siglip-qwen2"],
)
def test_backbone_families(vision, encoder, make_clips, tmp_path):
    config = VMemModelConfig(
        vision_config=vision,
        encoder_config=encoder,
        clip_frames=2,
        frame_tokens=2,
        memory_tokens=3,
        indicator_dim=8,
    )
    model = VMemModel(config).eval()
    clips = make_clips(2, seed=8, frames=2, size=48)  # resized to 32 inside
    with torch.inference_mode():
        memory, indicator = model.encode_clips(clips)
        memory, indicator = model.encode_clips(clips, memory)
    assert memory.shape == (2, 3, 32) and indicator.shape == (2, 8)
    model.save_pretrained(tmp_path)
    loaded = VMemModel.from_pretrained(tmp_path).eval()
    with torch.inference_mode():
        assert torch.equal(loaded.encode_clips(clips)[1], model.encode_clips(clips)[1])
