"""Frame encoder: any HF vision backbone, pooled to P tokens per frame in the memory space.

Transformers (ViT, CLIP, SigLIP) give a token sequence, whose patch tokens are kept (CLS or
register tokens dropped); convolutional nets (ResNet, ConvNeXt) give a feature map, whose
cells are the tokens. Either way the tokens keep their 2-D layout: they are average-pooled
to a grid of P cells (2 x 2 for P = 4), so where an object is, and where it moves, survives
the pooling, and projected to D.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedConfig

from models.hf import base_model_from_config


def vision_tower_config(config: PreTrainedConfig) -> PreTrainedConfig:
    """The vision part of a config: dual image-text configs (CLIP, SigLIP) hold it inside."""
    inner = getattr(config, "vision_config", None)
    return inner if isinstance(inner, PreTrainedConfig) else config


def _side(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def feature_width(config: PreTrainedConfig) -> int:
    """Channels of the backbone's last hidden state (``hidden_sizes[-1]`` for conv nets)."""
    sizes = getattr(config, "hidden_sizes", None)
    return int(sizes[-1]) if sizes else int(config.hidden_size)


def pooling_grid(tokens: int) -> tuple[int, int]:
    """The (rows, columns) grid of ``tokens`` cells closest to a square: 4 -> (2, 2)."""
    rows = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
    return rows, tokens // rows


class VisionBackbone(nn.Module):
    """uint8 RGB frames -> P tokens of size D per frame.

    Resizing and normalisation happen here (not in the decoder) so that a checkpoint carries
    everything needed to read raw frames.
    """

    def __init__(
        self,
        config: PreTrainedConfig,
        frame_tokens: int,
        hidden_size: int,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.5, 0.5, 0.5),
    ) -> None:
        super().__init__()
        config = vision_tower_config(config)
        self.model = base_model_from_config(config)
        self.image_size = _side(config.image_size)  # (h, w) the backbone expects
        patch = getattr(config, "patch_size", None)  # transformers only
        patch = _side(patch) if patch else None
        # a transformer's patch grid (rows, columns); conv nets give theirs in the output
        self.patch_grid: tuple[int, int] | None = None
        self.num_patches: int | None = None
        if patch:
            self.patch_grid = (self.image_size[0] // patch[0], self.image_size[1] // patch[1])
            self.num_patches = self.patch_grid[0] * self.patch_grid[1]
        self.frame_tokens = frame_tokens
        self.proj = nn.Linear(feature_width(config), hidden_size)
        # plain tuples, not buffers: nothing to lose when HF builds the model on the meta device
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, h, w) normalised pixels in the backbone's dtype."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be (N, H, W, 3), got {tuple(frames.shape)}")
        x = frames.permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W) in [0, 1]
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True)
        mean = x.new_tensor(self.image_mean).view(1, 3, 1, 1)
        std = x.new_tensor(self.image_std).view(1, 3, 1, 1)
        x = (x - mean) / std
        return x.to(self.proj.weight.dtype)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, P, D)."""
        pixels = self.preprocess(frames.to(self.proj.weight.device))
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.ndim != 4:  # (N, 1? + L, C): drop CLS / register tokens, back to the grid
            if self.patch_grid is None or self.num_patches is None:
                raise ValueError("a backbone without a patch size must return a feature map")
            patches = hidden[:, -self.num_patches :].transpose(1, 2)  # (N, C, L)
            hidden = patches.reshape(*patches.shape[:2], *self.patch_grid)  # (N, C, h, w)
        pooled = F.adaptive_avg_pool2d(hidden, pooling_grid(self.frame_tokens))  # (N, C, r, c)
        return self.proj(pooled.flatten(2).transpose(1, 2))  # (N, P, D), row by row
