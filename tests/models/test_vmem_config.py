from __future__ import annotations

import pytest
from transformers import CLIPConfig, GPT2Config, ViTConfig

from models.config import VMemModelConfig


def test_defaults_are_the_tiny_model():
    config = VMemModelConfig()
    assert (config.frame_tokens, config.clip_frames, config.memory_tokens) == (4, 16, 8)
    assert config.vision().model_type == "resnet" and config.vision().image_size == 64
    assert config.encoder().model_type == "llama" and config.encoder().hidden_size == 64
    encoder = config.encoder()
    needed = 2 * config.memory_tokens + config.clip_frames * config.frame_tokens
    assert encoder.max_position_embeddings >= needed
    assert config.question().vocab_size == 259


def test_sub_configs_round_trip(tmp_path):
    config = VMemModelConfig(
        vision_config=CLIPConfig(),  # a dual config: the vision tower is picked later
        encoder_config=GPT2Config(n_embd=32, n_layer=1, n_head=2),
        memory_tokens=3,
    )
    config.save_pretrained(tmp_path)
    loaded = VMemModelConfig.from_pretrained(tmp_path)
    assert loaded.to_dict() == config.to_dict()
    assert loaded.encoder().hidden_size == 32
    assert loaded.vision().vision_config.model_type == "clip_vision_model"
    assert loaded.memory_tokens == 3


def test_config_object_and_dict_give_the_same_sub_config():
    from_object = VMemModelConfig(vision_config=ViTConfig(image_size=32, patch_size=8))
    from_dict = VMemModelConfig(
        vision_config={"model_type": "vit", "image_size": 32, "patch_size": 8}
    )
    assert from_object.vision_config == from_dict.vision_config


def test_sub_config_without_model_type_is_rejected():
    with pytest.raises(ValueError, match="model_type"):
        VMemModelConfig(vision_config={"image_size": 32})
