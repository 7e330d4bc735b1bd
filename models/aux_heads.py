"""Auxiliary training heads: per-clip content labels predicted from the clip's memory.

Procedural worlds give, for free, what each clip shows (e.g. which colour/shape objects).
Predicting those labels from the memory of clip t (and those of clip t-1, which only the
carried memory can know) is a dense, direct signal for the vision backbone and the streaming
encoder; without it they learn only through the sparse answer and alignment losses.
Training-only: the head is not part of the saved VMem checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClipLabelHead(nn.Module):
    """Memory (B, N, M, D) -> multi-label logits (B, N, C): a small MLP over the memory mean."""

    def __init__(self, memory_dim: int, n_labels: int, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(memory_dim, hidden), nn.GELU(), nn.Linear(hidden, n_labels)
        )

    def forward(self, memories: torch.Tensor) -> torch.Tensor:
        return self.net(memories.mean(dim=-2))  # (..., M, D) -> (..., C)


def clip_label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of multi-hot labels: (B, N, C) logits and {0, 1} labels."""
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
