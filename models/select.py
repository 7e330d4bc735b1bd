"""Memory selection (VideoStreaming, step 2): the one home of "pick K clips for a question".

A question ranks the clips of a video by its selection queries (each alternative it offers,
"the X or the Y?", else itself), conditioned on the video's last memory (the video-aware
question); the K clips that fit best are kept in temporal order, so the answering model
reads their memories as a (shortened) story. The query stage and the held-out evaluation
both pick with :func:`select_clips` (TopK); training relaxes the same ranking with
:func:`gumbel_topk`. The archive stage searches the clips' :func:`archive_keys` with
:func:`archive_queries`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as hf_init

if TYPE_CHECKING:
    from models.vmem import VMemModel

_MASKED = -1e9  # finite "minus infinity": keeps softmax and its gradient NaN-free
SELECTION_PARTS = 2  # the most selection queries a question has (two alternatives)
# "... the X or the Y ..." (also a/an): the two alternatives a question offers
OFFERED = re.compile(r"\b(?:the|an?) ([a-z0-9 ]+?) or (?:the|an?) ([a-z0-9 ]+)")


# ---- the queries of a question ------------------------------------------------------------
def offered_alternatives(question: str) -> list[str]:
    """The two phrases a question offers ("the red square moving up or the blue star?" ->
    ["red square moving up", "blue star"]), lower case; [] unless it offers two distinct ones.
    The selection shares its K clips between them, and the answerer chooses between their
    names (``MemoryAnswerer.offered_choices``)."""
    found = OFFERED.search(question.lower())
    if found is None:
        return []
    sides = [side.strip() for side in found.groups()]
    return sides if all(sides) and sides[0] != sides[1] else []


def selection_queries(question: str) -> list[str]:
    """The texts that rank clips for a question: each offered alternative, else the question."""
    return offered_alternatives(question) or [question]


def part_texts(questions: list[str], n_parts: int = 0) -> list[list[str]]:
    """Each question's :func:`selection_queries`, padded to ``n_parts`` (0: the most any
    has) by repeating the first."""
    texts = [selection_queries(q) for q in questions]
    n_parts = max([n_parts, *(len(t) for t in texts)])
    return [t + [t[0]] * (n_parts - len(t)) for t in texts]


def question_inputs(
    model: VMemModel, questions: list[str], pooled: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass of the question encoder: unit embeddings (B, Q) and its pooled text (B, H).

    The pooled text (before the projection into the indicator space) is what the answerer
    reads: it keeps what the question asks, not only where to look. A frozen pretrained text
    model gives the same pooled text every time, so training may pass it in (``pooled``).
    """
    encoder = model.question_encoder
    if pooled is None:
        pooled = encoder.embed(questions)  # (B, H)
    unit = F.normalize(encoder.proj(pooled.to(encoder.proj.weight.dtype)), dim=-1)  # (B, Q)
    return unit, pooled


def encode_parts(
    model: VMemModel, questions: list[str], pooled: torch.Tensor | None = None
) -> torch.Tensor:
    """The queries that rank each question's clips, before conditioning: (B, A, Q) unit.

    A question offering two alternatives ("the X or the Y?") ranks by each alternative's
    phrase, any other by itself; a question with fewer than A parts repeats its first
    (:func:`part_texts`), which :func:`shared_topk` makes plain TopK.
    ``pooled`` (B, A, H): the frozen text model's cached pooled texts of those parts.
    """
    padded = part_texts(questions, 0 if pooled is None else pooled.shape[1])
    flat_pooled = None if pooled is None else pooled.flatten(0, 1)
    flat, _ = question_inputs(model, [t for row in padded for t in row], flat_pooled)
    return flat.view(len(questions), len(padded[0]), -1)  # (B, A, Q)


def condition_parts(
    model: VMemModel, parts: torch.Tensor, last_memory: torch.Tensor
) -> torch.Tensor:
    """Each part conditioned on its video's last memory: (B, A, Q), (B, M, D) -> (B, A, Q)."""
    batch, n_parts = parts.shape[:2]
    memory = last_memory.repeat_interleave(n_parts, dim=0)  # (B*A, M, D)
    return model.condition_questions(parts.flatten(0, 1), memory).view(batch, n_parts, -1)


def selection_parts(
    model: VMemModel, questions: list[str], last_memory: torch.Tensor
) -> torch.Tensor:
    """:func:`encode_parts` conditioned on each question's video (``last_memory`` (B, M, D),
    the video stage): the (B, A, Q) queries :func:`select_clips` shares the K clips among."""
    return condition_parts(model, encode_parts(model, questions), last_memory)


def archive_key_width(indicator_dim: int) -> int:
    """Floats of a clip's archive key: Q + 1, padded to a multiple of 16 (PQ sub-vectors of 4)."""
    return -(-(indicator_dim + 1) // 16) * 16


def archive_keys(indicators: np.ndarray, indicator_dim: int) -> np.ndarray:
    """(N, G*Q) unit indicators -> (N, key width) unit archive keys, what the ANN index holds.

    A clip's archive-stage fit is the question's cosine to the MEAN of its G unit token
    indicators (the question repeated G times against the G tokens side by side ranks the
    same). That is a dot product with a vector of norm <= 1, so it becomes a cosine, which
    IVF indexes recall well, by the exact MIPS-to-cosine lift with R = 1: key = [mean,
    sqrt(1 - |mean|^2), 0 ...], query = [q, 0 ...] (:func:`archive_queries`); every key has
    norm 1 and cosine(query, key) = q . mean for a unit q."""
    groups = indicators.reshape(len(indicators), -1, indicator_dim)  # (N, G, Q)
    mean = groups.astype(np.float64).mean(axis=1)  # (N, Q)
    slack = 1.0 - (mean * mean).sum(axis=1, keepdims=True)  # (N, 1)
    lift = np.sqrt(np.where(slack > 1e-6, slack, 0.0))  # float noise of unit means -> 0
    keys = np.zeros((len(indicators), archive_key_width(indicator_dim)), dtype=np.float32)
    keys[:, :indicator_dim] = mean
    keys[:, indicator_dim : indicator_dim + 1] = lift
    return keys


def archive_queries(questions: np.ndarray) -> np.ndarray:
    """(B, Q) unit question embeddings -> (B, key width) ANN queries of the archive stage:
    zero-padded, so their cosine to an archive key is the question's fit to the clip's mean
    token indicator (:func:`archive_keys`)."""
    width = archive_key_width(questions.shape[-1])
    return np.pad(questions.astype(np.float32), ((0, 0), (0, width - questions.shape[-1])))


# ---- scores and the K clips ---------------------------------------------------------------
def clip_scores(questions: torch.Tensor, indicators: torch.Tensor) -> torch.Tensor:
    """Cosine fit of each question to each clip of its video: (B, Q), (B, N, G*Q) -> (B, N),
    the best of a clip's G unit indicators (G = M per-token indicators, or 1)."""
    width = questions.shape[-1]
    per_group = indicators.unflatten(-1, (indicators.shape[-1] // width, width))  # (B, N, G, Q)
    return torch.einsum("bq,bngq->bng", questions, per_group).amax(dim=-1)


def part_scores(parts: torch.Tensor, indicators: torch.Tensor) -> torch.Tensor:
    """:func:`clip_scores` of each part of each question: (B, A, Q), (B, N, G*Q) -> (B, A, N)."""
    batch, n_parts = parts.shape[:2]
    rows = indicators.repeat_interleave(n_parts, dim=0)  # (B*A, N, G*Q)
    return clip_scores(parts.flatten(0, 1), rows).view(batch, n_parts, -1)


def selection_scores(
    parts: torch.Tensor,
    indicators: torch.Tensor,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the K clips are chosen by: parts (B, A, Q) or questions (B, Q), indicators
    (B, N, G*Q) -> cosine fits (B, A, N) and ranking scores ``cosine / temperature + bias``
    (B, A, N) (``bias`` (B, N), e.g. forcing evidence clips in while training)."""
    parts = parts if parts.ndim == 3 else parts.unsqueeze(1)  # (B, A, Q)
    cosine = part_scores(parts, indicators)  # (B, A, N)
    scores = cosine / temperature
    if bias is not None:
        scores = scores + bias.unsqueeze(1)
    return cosine, scores


def select_clips(
    parts: torch.Tensor,
    indicators: torch.Tensor,
    k: int,
    temperature: float = 1.0,
    bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The K clips of each video that fit its question best: THE selection at inference.

    parts (B, A, Q) (:func:`selection_parts`) or questions (B, Q), indicators (B, N, G*Q)
    of each video's clips in time order -> clip indices (B, K), ascending (time order) and
    padded with -1 at the end when a video has fewer than K clips, and each chosen clip's
    fit (B, K): its cosine to its best-fitting part (0 where padded). The A parts share the
    K clips (:func:`shared_topk`), so a question offering two alternatives gets evidence of
    both. ``temperature`` and ``bias`` shape the ranking as :func:`selection_scores`.
    """
    cosine, scores = selection_scores(parts, indicators, temperature, bias)
    take = min(k, cosine.shape[-1])
    index = shared_topk(scores, take)  # (B, take), every slot filled
    fit = cosine.detach().amax(dim=1).gather(1, index)  # (B, take)
    if take < k:  # pad to the constant budget
        index = F.pad(index, (0, k - take), value=-1)
        fit = F.pad(fit, (0, k - take))
    return index, fit


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
