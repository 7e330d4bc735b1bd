"""The Hugging Face config of the VMem model (saved as ``config.json`` next to the weights).

Sub-models (vision backbone, streaming encoder LM, question encoder) are stored as plain
dicts carrying their ``model_type``, so any HF family round-trips through
``save_pretrained``/``from_pretrained`` without a custom sub-config class per family.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from transformers import AutoConfig, PreTrainedConfig

# The tiny defaults: fast on 2 CPU cores, random init; real checkpoints load by path.
# The default frame encoder is a tiny ResNet: trained from scratch on CPU, it tells the
# world's shapes apart after a few hundred steps (held-out 0.98), while a tiny ViT of the same
# cost stays near chance (0.25-0.37 after 1000-2000 steps, patch 8 or 16, width 64 or 128).
# ViT, CLIP and SigLIP towers load by path (checkpoints.compose).
DEFAULT_VISION: dict[str, Any] = {
    "model_type": "resnet",
    "image_size": 64,  # not a ResNet field: the frame size VMem resizes to
    "embedding_size": 16,
    "hidden_sizes": [16, 32, 64],
    "depths": [1, 1, 1],
    "layer_type": "basic",
}
DEFAULT_ENCODER: dict[str, Any] = {
    "model_type": "llama",
    "vocab_size": 32,  # unused: the encoder reads inputs_embeds only
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 256,  # >= M + T*P + M = 80 with the defaults
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
}
DEFAULT_QUESTION: dict[str, Any] = {
    "model_type": "bert",
    "vocab_size": 259,  # 256 bytes + PAD, CLS, SEP (see models.question.ByteTokenizer)
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 128,  # also the tokenizer's max length
    "pad_token_id": 256,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


def _as_config_dict(value: Any, default: dict[str, Any], name: str) -> dict[str, Any]:
    """A sub-config as its JSON form (non-default fields + model_type), so it round-trips.

    Accepts None (the default), a dict with ``model_type`` or a config object; building the
    config object once here rejects unknown model types early.
    """
    if value is None:
        value = default
    if isinstance(value, dict):
        if "model_type" not in value:
            raise ValueError(f"{name} needs a 'model_type' key, got keys {sorted(value)}")
        value = build_sub_config(value)
    if not isinstance(value, PreTrainedConfig):
        raise TypeError(f"{name} must be a dict or a PreTrainedConfig, got {type(value).__name__}")
    out = json.loads(value.to_json_string(use_diff=True))
    out.pop("transformers_version", None)
    out["model_type"] = value.model_type
    return out


def _check_subfolder(value: str, name: str) -> None:
    """A folder inside the checkpoint: relative, no '..', so the checkpoint is self-contained."""
    parts = PurePosixPath(value).parts
    if not parts or PurePosixPath(value).is_absolute() or ".." in parts:
        raise ValueError(f"{name} must be a subfolder of the checkpoint, got {value!r}")


DEFAULT_PIXEL_STATS = (0.5, 0.5, 0.5)  # per-channel mean and std when a config gives none


def build_sub_config(config_dict: dict[str, Any] | PreTrainedConfig | None) -> PreTrainedConfig:
    """Rebuild an HF config object from its dict (inverse of ``to_dict``); a config's
    ``__post_init__`` has already turned each of its sub-configs into a dict."""
    if not isinstance(config_dict, dict):
        raise TypeError(f"expected a sub-config dict, got {type(config_dict).__name__}")
    return AutoConfig.for_model(**config_dict)


class VMemModelConfig(PreTrainedConfig):
    """Hyper-parameters of the VideoStreaming-style memory encoder, selector and conditioner."""

    model_type = "vmem"

    # HF vision config (dict with model_type): ViT, CLIP/SigLIP vision (or their dual configs)
    vision_config: dict | PreTrainedConfig | None = None
    # P: patch tokens of a frame are pooled to P tokens
    frame_tokens: int = 4
    # T: frames per clip (the clip is T*P tokens)
    clip_frames: int = 16
    # HF causal-LM config (dict with model_type) of the streaming encoder; its hidden size is D
    encoder_config: dict | PreTrainedConfig | None = None
    # M: memory tokens carried from clip to clip (and summary queries per clip)
    memory_tokens: int = 8
    # Q: size of clip indicators and question embeddings (the ANN space)
    indicator_dim: int = 64
    # one unit indicator per memory token (a clip's indicator is M*Q wide) and a clip scores
    # as its best-fitting token, so a question must fit one token (one scene) whole; False:
    # one indicator of the tokens' mean, which scores a clip on the attributes it holds
    # across its scenes, whichever objects hold them (``models.select.clip_scores``)
    per_token_indicators: bool = False
    # each frame's change since the previous one, as a learned motion feature added to its
    # tokens in the streaming encoder (``models.motion``); False in checkpoints from before
    motion_features: bool = False
    # HF text-encoder config (dict with model_type) of the question encoder (byte vocabulary)
    question_config: dict | PreTrainedConfig | None = None
    # subfolder of the checkpoint holding the HF tokenizer of a pretrained question encoder,
    # which is then frozen (only its projection trains); None: byte tokenizer, all trainable
    question_tokenizer: str | None = None
    # attention heads of the video-stage conditioner's cross-attention (must divide D)
    conditioner_heads: int = 2
    # per-channel RGB mean/std used to normalise frames scaled to [0, 1]
    image_mean: list[float] | None = None
    image_std: list[float] | None = None
    # std of the normal init of VMem's own layers (sub-models use their own config's)
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        self.vision_config = _as_config_dict(self.vision_config, DEFAULT_VISION, "vision_config")
        self.encoder_config = _as_config_dict(
            self.encoder_config, DEFAULT_ENCODER, "encoder_config"
        )
        self.question_config = _as_config_dict(
            self.question_config, DEFAULT_QUESTION, "question_config"
        )
        self.image_mean = list(self.image_mean) if self.image_mean else list(DEFAULT_PIXEL_STATS)
        self.image_std = list(self.image_std) if self.image_std else list(DEFAULT_PIXEL_STATS)
        if self.question_tokenizer is not None:
            _check_subfolder(self.question_tokenizer, "question_tokenizer")
        for name in ("frame_tokens", "clip_frames", "memory_tokens", "indicator_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        super().__post_init__(**kwargs)

    @property
    def indicator_width(self) -> int:
        """Floats of one clip's stored indicator: M*Q with per-token indicators, else Q."""
        return self.indicator_dim * (self.memory_tokens if self.per_token_indicators else 1)

    def vision(self) -> PreTrainedConfig:
        """The vision backbone's HF config object."""
        return build_sub_config(self.vision_config)

    def encoder(self) -> PreTrainedConfig:
        """The streaming encoder LM's HF config object."""
        return build_sub_config(self.encoder_config)

    def question(self) -> PreTrainedConfig:
        """The question encoder's HF config object."""
        return build_sub_config(self.question_config)
