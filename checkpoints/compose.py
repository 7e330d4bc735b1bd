"""A VMem model composed from pretrained Hugging Face parts (vision, encoder LM, question).

Each part is a plain HF model folder: any ViT-style vision model (ViT, CLIP, SigLIP; the
vision tower of a dual image-text model), any causal LM (Llama, Qwen2, Phi, GPT-2, ...;
optionally only its first N layers, as the paper keeps 16 of Phi-2's) and a BERT-family
sentence encoder for questions (used frozen, with its own tokenizer). VMem's own layers
adapt the widths: vision hidden -> D by the frame projection, D is the LM's hidden size, the
question encoder's hidden size -> Q by its projection. Parts not given keep the tiny default.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedConfig
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
from transformers.utils import logging as hf_logging
from transformers.utils.constants import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from models.config import VMemModelConfig
from models.vision import vision_tower_config
from models.vmem import VMemModel

logger = logging.getLogger(__name__)

# where a composed checkpoint keeps the question encoder's tokenizer (relative to itself)
QUESTION_TOKENIZER_DIR = "question_tokenizer"
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


class ModelPartError(ValueError):
    """A part folder that cannot serve as the part it was given for."""


def _part_config(path: str | Path, role: str) -> PreTrainedConfig:
    """The HF config of a part folder, with a clear error when it is not an HF model folder."""
    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise ModelPartError(f"{role} {folder}: no config.json (not a Hugging Face model folder)")
    if not any(any(folder.glob(pattern)) for pattern in WEIGHT_PATTERNS):
        raise ModelPartError(f"{role} {folder}: no weights (*.safetensors or *.bin)")
    try:
        return AutoConfig.from_pretrained(str(folder))
    except (ValueError, KeyError, OSError) as exc:
        raise ModelPartError(f"{role} {folder}: unreadable config.json: {exc}") from exc


def _plain(config: PreTrainedConfig) -> PreTrainedConfig:
    """Drop the stored dtype: VMem builds every part in one dtype (float32, or the caller's)."""
    config.dtype = None
    return config


def read_vision_part(path: str | Path) -> tuple[PreTrainedConfig, list[float], list[float]]:
    """The vision tower's config and the RGB mean/std its pixels are normalised with."""
    full = _part_config(path, "vision_model")
    tower = vision_tower_config(full)
    if not all(hasattr(tower, key) for key in ("image_size", "patch_size", "hidden_size")):
        raise ModelPartError(
            f"vision_model {path}: model_type {full.model_type!r} is not a ViT-style image "
            "encoder (ViT, CLIP, SigLIP, ...: a config with image_size and patch_size)"
        )
    mean, std = [0.5] * 3, [0.5] * 3
    if "clip" in tower.model_type:
        mean, std = list(OPENAI_CLIP_MEAN), list(OPENAI_CLIP_STD)
    preprocessor = Path(path) / "preprocessor_config.json"
    if preprocessor.is_file():
        saved = json.loads(preprocessor.read_text())
        mean, std = saved.get("image_mean", mean), saved.get("image_std", std)
    return _plain(tower), [float(v) for v in mean], [float(v) for v in std]


def read_encoder_lm_part(path: str | Path, layers: int | None) -> PreTrainedConfig:
    """The causal LM's config, cut to its first ``layers`` decoder layers when given."""
    config = _part_config(path, "encoder_lm")
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or config.is_encoder_decoder:
        raise ModelPartError(
            f"encoder_lm {path}: model_type {config.model_type!r} is not a causal LM "
            "(Llama, Qwen2, Phi, GPT-2, ...)"
        )
    if layers is not None:
        total = config.num_hidden_layers
        if not 1 <= layers <= total:
            raise ModelPartError(f"encoder_lm_layers must be in 1..{total} for {path}: {layers}")
        config.num_hidden_layers = layers
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = config.layer_types[:layers]  # per-layer attention kinds
    return _plain(config)


def read_question_part(path: str | Path) -> PreTrainedConfig:
    """The sentence encoder's config; its tokenizer must sit in the same folder."""
    config = _part_config(path, "question_model")
    tower = vision_tower_config(config)
    if tower is not config or hasattr(config, "image_size") or not hasattr(config, "vocab_size"):
        raise ModelPartError(
            f"question_model {path}: model_type {config.model_type!r} is not a text encoder"
        )
    return _plain(config)


def load_question_tokenizer(path: str | Path):
    """The part's own tokenizer (local files only)."""
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise ModelPartError(f"question_model {path}: no usable tokenizer files: {exc}") from exc


def compose_config(
    vision_model: str | None,
    encoder_lm: str | None,
    question_model: str | None,
    encoder_lm_layers: int | None = None,
    per_token_indicators: bool = False,
    motion_features: bool = False,
) -> VMemModelConfig:
    """The default VMem config with the given parts' configs swapped in."""
    fields: dict = {
        "per_token_indicators": per_token_indicators,
        "motion_features": motion_features,
    }
    if vision_model is not None:
        tower, mean, std = read_vision_part(vision_model)
        fields.update(vision_config=tower, image_mean=mean, image_std=std)
    if encoder_lm is not None:
        fields["encoder_config"] = read_encoder_lm_part(encoder_lm, encoder_lm_layers)
    elif encoder_lm_layers is not None:
        raise ModelPartError("encoder_lm_layers keeps the first layers of encoder_lm: give both")
    if question_model is not None:
        fields.update(
            question_config=read_question_part(question_model),
            question_tokenizer=QUESTION_TOKENIZER_DIR,
        )
    config = VMemModelConfig(**fields)
    needed = 2 * config.memory_tokens + config.clip_frames * config.frame_tokens
    limit = getattr(config.encoder(), "max_position_embeddings", None)
    if limit is not None and limit < needed:
        raise ModelPartError(
            f"encoder_lm {encoder_lm}: {limit} positions, but a clip step reads {needed} tokens"
        )
    return config


def compose_model(
    vision_model: str | None,
    encoder_lm: str | None,
    question_model: str | None,
    encoder_lm_layers: int | None = None,
    seed: int = 0,
    per_token_indicators: bool = False,
    motion_features: bool = False,
) -> VMemModel:
    """A VMem model whose given parts carry their pretrained weights, the rest seeded-random
    (``per_token_indicators``, ``motion_features``: see ``VMemModelConfig``).

    The caller's global RNG is left as it was. Returned in eval mode.
    """
    config = compose_config(
        vision_model,
        encoder_lm,
        question_model,
        encoder_lm_layers,
        per_token_indicators,
        motion_features,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = VMemModel(config)
    if vision_model is not None:
        load_part(model.vision.model, vision_model, config.vision(), "vision_model")
    if encoder_lm is not None:
        load_part(model.streaming.lm, encoder_lm, config.encoder(), "encoder_lm")
    if question_model is not None:
        load_part(model.question_encoder.model, question_model, config.question(), "question_model")
        model.question_encoder.set_tokenizer(load_question_tokenizer(question_model))
    return model.eval()


def _group(key: str) -> str:
    """A checkpoint key's group for the report: up to its first layer index (``model.layers.7``),
    else its first segment (``lm_head``)."""
    segments = key.split(".")
    for i, segment in enumerate(segments):
        if segment.isdigit():
            return ".".join(segments[: i + 1])
    return segments[0]


@contextlib.contextmanager
def _quiet_hf() -> Iterator[None]:
    """HF prints its own load report; VMem raises or logs a shorter one instead."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def load_part(target: nn.Module, path: str | Path, config: PreTrainedConfig, role: str) -> None:
    """Copy a part's pretrained weights into ``target`` (a base model built from ``config``).

    The checkpoint is read with ``target``'s own class, so task heads and prefixes
    (``model.``, ``vit.``, a dual model's ``text_model``) are handled by HF; every weight of
    ``target`` must be found, while checkpoint tensors VMem does not use are only logged.
    """
    cls = type(target)
    kwargs = {}
    if "add_pooling_layer" in inspect.signature(cls.__init__).parameters:
        kwargs["add_pooling_layer"] = False  # as models.hf builds it: no dead pooler
    with _quiet_hf():
        source, info = cls.from_pretrained(
            str(path), config=config, output_loading_info=True, **kwargs
        )
    missing = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if missing:
        raise ModelPartError(
            f"{role} {path}: {len(missing)} weights of {cls.__name__} are not in the "
            f"checkpoint (or have other shapes), e.g. {missing[:5]}"
        )
    target.load_state_dict(source.state_dict(), strict=True)
    unused = Counter(_group(key) for key in info["unexpected_keys"])
    if unused:
        summary = ", ".join(f"{prefix} ({n})" for prefix, n in sorted(unused.items()))
        logger.info("%s %s: checkpoint tensors VMem does not use: %s", role, path, summary)
