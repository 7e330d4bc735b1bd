from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig

from models.streaming import StreamingMemoryEncoder

LM = LlamaConfig(
    vocab_size=8,
    hidden_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    bos_token_id=0,
    eos_token_id=0,
    pad_token_id=0,
)


@pytest.fixture
def encoder() -> StreamingMemoryEncoder:
    torch.manual_seed(0)
    return StreamingMemoryEncoder(LM, memory_tokens=3, clip_tokens=10, indicator_dim=12).eval()


def test_shapes_and_unit_indicator(encoder):
    clip = torch.randn(2, 10, 32)
    with torch.inference_mode():
        memory, indicator = encoder(clip, encoder.initial_memory(2))
    assert memory.shape == (2, 3, 32)
    assert indicator.shape == (2, 12)
    torch.testing.assert_close(indicator.norm(dim=-1), torch.ones(2))


def test_per_token_indicators_are_one_unit_vector_per_memory_token(encoder):
    per_token = StreamingMemoryEncoder(
        LM, memory_tokens=3, clip_tokens=10, indicator_dim=12, per_token_indicators=True
    ).eval()
    per_token.load_state_dict(encoder.state_dict())  # no parameter of its own
    clip, start = torch.randn(2, 10, 32), encoder.initial_memory(2)
    with torch.inference_mode():
        memory, indicator = per_token(clip, start)
        same_memory, mean_indicator = encoder(clip, start)
        own = torch.nn.functional.normalize(encoder.indicator_head(memory), dim=-1)
    torch.testing.assert_close(memory, same_memory)  # the indicators' form leaves it as it is
    assert indicator.shape == (2, 3 * 12)
    torch.testing.assert_close(indicator.view(2, 3, 12), own)  # token j's own indicator
    torch.testing.assert_close(indicator.view(2, 3, 12).norm(dim=-1), torch.ones(2, 3))
    assert mean_indicator.shape == (2, 12)


def test_initial_memory_is_learned_and_shared(encoder):
    start = encoder.initial_memory(4)
    assert start.shape == (4, 3, 32)
    assert torch.equal(start[0], start[3]) and start.abs().sum() > 0


def test_memory_depends_on_previous_memory(encoder):
    clip = torch.randn(1, 10, 32)
    with torch.inference_mode():
        a, _ = encoder(clip, encoder.initial_memory(1))
        b, _ = encoder(clip, torch.randn(1, 3, 32))
    assert not torch.allclose(a, b)


def test_wrong_clip_length_is_rejected(encoder):
    with pytest.raises(ValueError, match="clip tokens"):
        encoder(torch.randn(1, 9, 32), encoder.initial_memory(1))
