"""Adaptive memory selection (VideoStreaming, step 2) and the video-stage conditioner.

The K clips that fit a question best are kept in temporal order, so the answering model reads
their memories as a (shortened) story. TopK at inference, Gumbel-TopK while training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as hf_init

_MASKED = -1e9  # finite "minus infinity": keeps softmax and its gradient NaN-free


def topk_select(scores: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Indices of the k best-scoring clips per row, in temporal (index) order: (B, N) -> (B, k).

    Always returns k columns. A row with fewer than k candidates (N < k, or clips masked
    out by ``mask``, a (B, N) bool of valid clips) is padded with -1 at the END, after its
    valid indices, which stay ascending.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    batch, n = scores.shape
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask.bool()
    masked = scores.float().masked_fill(~valid, float("-inf"))  # (B, N)
    take = min(k, n)
    top = masked.topk(take, dim=1).indices  # (B, take) best first
    keep = valid.gather(1, top)  # (B, take) False where only masked clips were left
    ordered = torch.where(keep, top, n).sort(dim=1).values  # valid ascending, then n
    ordered = ordered.masked_fill(ordered == n, -1)
    pad = torch.full((batch, k - take), -1, dtype=ordered.dtype, device=ordered.device)
    return torch.cat([ordered, pad], dim=1)  # (B, k)


def shared_topk(scores: torch.Tensor, k: int, mask: torch.Tensor | None = None) -> torch.Tensor:
    """k clips shared among A rankings of the same clips: (B, A, N) -> (B, k) in temporal order.

    The rankings take turns, each taking its best clip not taken yet, so a question asking
    about two things gets evidence of both (k / A clips each). Padded with -1 as
    :func:`topk_select`; with A = 1 it is that function.
    """
    if scores.shape[1] == 1:
        return topk_select(scores[:, 0], k, mask)
    batch, parts, n = scores.shape
    taken = torch.zeros(batch, n, dtype=torch.bool, device=scores.device)
    if mask is not None:
        taken = ~mask.bool()  # masked clips count as taken
    rows = torch.arange(batch, device=scores.device)
    picks = []
    for turn in range(k):
        free = scores[:, turn % parts].float().masked_fill(taken, float("-inf"))  # (B, N)
        pick = free.argmax(dim=1)  # (B,) this ranking's best clip not taken yet
        found = free[rows, pick] > float("-inf")  # False: no clip left
        taken = taken.clone()
        taken[rows, pick] |= found
        picks.append(torch.where(found, pick, n))
    ordered = torch.stack(picks, dim=1).sort(dim=1).values  # taken ascending, then n
    return ordered.masked_fill(ordered == n, -1)


def gumbel_topk(
    scores: torch.Tensor,
    k: int,
    tau: float = 1.0,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable top-k sampling for training: (B, N) -> indices (B, k), weights (B, k, N).

    Gumbel noise perturbs the scores; the hard choice is the top k of the perturbed scores in
    temporal order. ``weights[b, j]`` is the one-hot row of the j-th chosen clip, straight-
    through: its forward value is exactly one-hot, its gradient is that of a relaxed k-hot
    (k successive tempered softmaxes). Select memories with ``weights @ memories``
    ((B, k, N) @ (B, N, X) -> (B, k, X)). Needs k <= number of valid clips in each row.
    Scores (B, A, N) (A rankings of the same clips, one noise per clip): the hard choice is
    :func:`shared_topk` of the perturbed rankings, the relaxation that of each clip's best.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    n_clips = scores.shape[-1]
    if k > n_clips:
        raise ValueError(f"k={k} exceeds the {n_clips} clips")
    parts = scores if scores.ndim == 3 else scores.unsqueeze(1)  # (B, A, N)
    uniform = torch.rand(parts[:, 0].shape, generator=generator, device=scores.device)
    gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0 - 1e-7)))
    logits = (parts + gumbel.to(scores.dtype).unsqueeze(1)) / tau  # (B, A, N)
    if mask is not None:
        logits = logits.masked_fill(~mask.bool().unsqueeze(1), _MASKED)
    indices = shared_topk(logits.detach(), k, mask)  # (B, k) temporal order
    if (indices < 0).any():
        raise ValueError("gumbel_topk needs at least k valid clips in every row")
    soft = _relaxed_k_hot(logits.amax(dim=1), k)  # (B, N), sums to k
    hard = F.one_hot(indices, n_clips).to(soft.dtype)  # (B, k, N)
    weights = hard * (1.0 + soft - soft.detach()).unsqueeze(1)  # one-hot forward, soft grad
    return indices, weights


def _relaxed_k_hot(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Sum of k successive softmaxes, each damping what was already taken: (B, N) -> (B, N)."""
    soft = torch.zeros_like(logits)
    for _ in range(k):
        probs = torch.softmax(logits, dim=-1)
        soft = soft + probs
        logits = logits + torch.log((1.0 - probs).clamp_min(1e-20))
    return soft


class VideoStageConditioner(nn.Module):
    """Conditions a question on one video's last memory (the paper's video-aware question).

    One cross-attention block (question attends to the M memory tokens) adds a residual to the
    question embedding. The output projection starts at zero, so an untrained conditioner
    returns the question itself and the video stage ranks like the archive stage.
    """

    def __init__(self, indicator_dim: int, hidden_size: int, heads: int = 2) -> None:
        super().__init__()
        self.query_in = nn.Linear(indicator_dim, hidden_size)
        self.memory_norm = nn.LayerNorm(hidden_size)
        self.attn = nn.MultiheadAttention(hidden_size, heads, batch_first=True)
        self.out = nn.Linear(hidden_size, indicator_dim)
        self.init_own_weights()

    def init_own_weights(self) -> None:
        """Zero residual at init: the conditioner starts as the identity."""
        hf_init.zeros_(self.out.weight)
        hf_init.zeros_(self.out.bias)

    def forward(self, question: torch.Tensor, last_memory: torch.Tensor) -> torch.Tensor:
        """(B, Q), (B, M, D) -> (B, Q) unit norm."""
        query = self.query_in(question).unsqueeze(1)  # (B, 1, D)
        memory = self.memory_norm(last_memory.to(query.dtype))  # (B, M, D)
        context, _ = self.attn(query, memory, memory, need_weights=False)  # (B, 1, D)
        return F.normalize(question + self.out(context.squeeze(1)), dim=-1)  # (B, Q)
