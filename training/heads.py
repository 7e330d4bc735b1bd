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
    """Memory (B, N, M, D) -> multi-label logits (B, N, C): a small MLP over the memory tokens
    laid side by side (``memory_tokens`` = M), or over their mean (``memory_tokens`` = 0).

    Reading the M tokens side by side lets each token hold its own part of the labels; their
    mean squeezes every label group into D numbers. ``groups``: sizes of consecutive label
    groups (summing to C) whose mean losses are added (``clip_label_loss``), so a large sparse
    group does not drown a small one.
    """

    def __init__(
        self,
        memory_dim: int,
        n_labels: int,
        hidden: int = 128,
        groups: tuple[int, ...] = (),
        memory_tokens: int = 0,
    ) -> None:
        super().__init__()
        if groups and sum(groups) != n_labels:
            raise ValueError(f"label groups {groups} do not add up to {n_labels} labels")
        self.groups = tuple(groups) or (n_labels,)
        self.memory_tokens = memory_tokens
        width = memory_dim * memory_tokens if memory_tokens else memory_dim
        self.net = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, n_labels))

    def forward(self, memories: torch.Tensor) -> torch.Tensor:
        if self.memory_tokens:
            if memories.shape[-2] != self.memory_tokens:
                got = memories.shape[-2]
                raise ValueError(f"expected {self.memory_tokens} memory tokens, got {got}")
            return self.net(memories.flatten(-2))  # (..., M, D) -> (..., C)
        return self.net(memories.mean(dim=-2))  # (..., M, D) -> (..., C)


class SceneStackHead(nn.Module):
    """The first ``depth`` memory tokens (B, N, M, D) -> logits (B, N, depth, L), one small
    MLP shared by the tokens: token j learns to hold the j-th latest scene in the same code
    as every other token, so what came just before a scene sits in the next token."""

    def __init__(self, memory_dim: int, n_labels: int, depth: int, hidden: int = 128) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.net = nn.Sequential(
            nn.Linear(memory_dim, hidden), nn.GELU(), nn.Linear(hidden, n_labels)
        )

    def forward(self, memories: torch.Tensor) -> torch.Tensor:
        if memories.shape[-2] < self.depth:
            got = memories.shape[-2]
            raise ValueError(f"a stack of {self.depth} needs as many memory tokens, got {got}")
        return self.net(memories[..., : self.depth, :])


class EvidencePlaceHead(nn.Module):
    """The answerer's hidden states at its memory positions (B, K*M, H) -> logits (B, K, depth):
    does stack place j of selected slot k hold a scene the question asks about? Read after
    the question, this teaches the answerer to find the named scenes among the tokens
    (history: the scene before the named one is the other evidence place)."""

    def __init__(self, hidden: int, memory_tokens: int, depth: int) -> None:
        super().__init__()
        if not 1 <= depth <= memory_tokens:
            raise ValueError(f"depth must be in 1..{memory_tokens} memory tokens, got {depth}")
        self.memory_tokens, self.depth = memory_tokens, depth
        self.net = nn.Linear(hidden, 1)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        batch = states.shape[0]
        slots = states.view(batch, -1, self.memory_tokens, states.shape[-1])  # (B, K, M, H)
        return self.net(slots[:, :, : self.depth]).squeeze(-1)  # (B, K, depth)


def evidence_place_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """BCE of (B, K, depth) logits against {0, 1} targets over the valid slots (B, K)."""
    losses = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    weights = valid.unsqueeze(-1).expand_as(losses).to(losses.dtype)
    return (losses * weights).sum() / weights.sum().clamp_min(1.0)


def clip_label_loss(
    logits: torch.Tensor, labels: torch.Tensor, groups: tuple[int, ...] = ()
) -> torch.Tensor:
    """Binary cross-entropy of multi-hot labels, (B, N, C) logits and {0, 1} labels: the mean
    over all C, or the sum of the means of consecutive label ``groups`` (sizes)."""
    losses = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none")
    if not groups:
        return losses.mean()
    return sum(part.mean() for part in losses.split(list(groups), dim=-1))
