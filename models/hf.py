"""Building Hugging Face base models from configs (random init, no hub access)."""

from __future__ import annotations

from torch import nn
from transformers import AutoModel, PreTrainedConfig

# families whose base model carries a pooler head that VMem never uses (dead weights)
_POOLER_FAMILIES = {"vit", "deit", "bert"}


def base_model_from_config(config: PreTrainedConfig) -> nn.Module:
    """``AutoModel.from_config`` without the pooler head where the family has one."""
    kwargs = {"add_pooling_layer": False} if config.model_type in _POOLER_FAMILIES else {}
    return AutoModel.from_config(config, **kwargs)
