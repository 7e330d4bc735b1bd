"""Training helpers (pure torch): streaming a whole video with carried memory, the
question<->indicator alignment loss, and the K-clip selection the answerer reads (at
inference ``models.select.select_clips``; while training its Gumbel-TopK relaxation).

Encoding a video for training chains its clips exactly as ingest does (clip t reads the
memory of clip t-1), but keeps the graph, so the answer loss teaches clip t's encoder what
later clips need to remember. ``detach_every`` truncates that backpropagation through time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.answer import slot_answer_words
from models.select import (
    clip_scores,
    condition_parts,
    encode_parts,
    gumbel_topk,
    question_inputs,
    select_clips,
    selection_scores,
)
from training.heads import clip_label_loss, evidence_place_loss


def frame_tokens(model, frames: torch.Tensor) -> torch.Tensor:
    """The vision backbone once over every frame: (B, N, T, H, W, 3) -> (B, N, T*P, D)."""
    batch, n_clips = frames.shape[:2]
    tokens = model.vision(frames.flatten(0, 2))  # (B*N*T, P, D)
    return tokens.reshape(batch, n_clips, -1, tokens.shape[-1])  # (B, N, T*P, D)


def stream_clips(
    model,
    tokens: torch.Tensor,
    reset_every_clip: bool = False,
    detach_every: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The streaming LM clip by clip with carried memory: (B, N, T*P, D) ->
    memories (B, N, M, D), indicators (B, N, G*Q)."""
    start = model.streaming.initial_memory(tokens.shape[0]).to(tokens.dtype)  # (B, M, D)
    memory, memories, indicators = start, [], []
    for t in range(tokens.shape[1]):
        if reset_every_clip:
            memory = start
        elif detach_every and t > 0 and t % detach_every == 0:
            memory = memory.detach()
        memory, indicator = model.streaming(tokens[:, t], memory)  # (B, M, D), (B, Q)
        memories.append(memory)
        indicators.append(indicator)
    return torch.stack(memories, dim=1), torch.stack(indicators, dim=1)


def encode_video_clips(
    model,
    frames: torch.Tensor,
    reset_every_clip: bool = False,
    detach_every: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stream clips with carried memory.

    (N, T, H, W, 3) uint8 -> memories (N, M, D), indicators (N, Q); or a batch of videos
    with the same clip count (B, N, T, H, W, 3) -> (B, N, M, D), (B, N, Q). The vision
    backbone runs once over all frames; only the streaming LM is sequential.
    ``reset_every_clip`` encodes every clip from the initial memory (an ablation);
    ``detach_every`` cuts the gradient through the carried memory every that many clips.
    """
    single = frames.ndim == 5
    if single:
        frames = frames.unsqueeze(0)
    tokens = frame_tokens(model, frames)  # (B, N, T*P, D)
    memories, indicators = stream_clips(model, tokens, reset_every_clip, detach_every)
    if single:
        return memories[0], indicators[0]
    return memories, indicators


def alignment_loss(
    questions: torch.Tensor,
    indicators: torch.Tensor,
    positives: torch.Tensor,
    temperature: float = 0.1,
    each_clip: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of each question against the clips of its own video.

    questions (B, Q) unit, indicators (B, N, G*Q) unit (row b: the video of question b),
    positives (B, N) bool (the clips overlapping the evidence). The loss of a row is
    -log(sum_pos exp(s/t) / sum_all exp(s/t)), which one high evidence clip satisfies; rows
    marked in ``each_clip`` (B,) bool take instead the mean over their evidence clips of
    -log(exp(s/t) / sum_all exp(s/t)), which pulls every evidence clip up. Rows without a
    positive clip (e.g. a count of zero) or whose every clip is positive carry no signal and
    are skipped. A scalar (0 with a graph when no row counts).
    """
    positives = positives.bool()
    logits = clip_scores(questions, indicators) / temperature  # (B, N)
    rows = positives.any(dim=1) & ~positives.all(dim=1)
    if not rows.any():
        return logits.sum() * 0.0
    logits, positives = logits[rows], positives[rows]
    every = logits.logsumexp(dim=1)
    loss = every - logits.masked_fill(~positives, float("-inf")).logsumexp(dim=1)
    if each_clip is not None:
        each = ((every.unsqueeze(1) - logits) * positives).sum(dim=1) / positives.sum(dim=1)
        loss = torch.where(each_clip[rows], each, loss)
    return loss.mean()


def forcing_bias(forced: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Score bias that puts the ``forced`` (..., N) bool clips first in the selection."""
    return forced.to(dtype) * 1e3


def selection_bias(
    positives: torch.Tensor,
    oracle: torch.Tensor | None,
    hidden: torch.Tensor | None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor | None:
    """Training's score bias (Bq, N): the evidence clips of ``oracle`` (Bq,) rows forced in
    (:func:`forcing_bias`), the ``hidden`` (Bq, N) clips kept out; None when neither."""
    bias = None
    if oracle is not None:
        bias = forcing_bias(positives.bool() & oracle.view(-1, 1), dtype)
    if hidden is not None and hidden.any():
        if bias is None:
            bias = torch.zeros(positives.shape, dtype=dtype, device=hidden.device)
        bias = bias.masked_fill(hidden, -1e3)
    return bias


def select_memories(
    questions: torch.Tensor,
    indicators: torch.Tensor,
    memories: torch.Tensor,
    k: int,
    training: bool,
    temperature: float = 0.1,
    tau: float = 1.0,
    bias: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The K clips that fit each question best, in time order, as K*M tokens.

    questions (B, Q) or (B, A, Q) (the parts of ``models.select.selection_parts``),
    indicators (B, N, G*Q), memories (B, N, M, D) -> tokens (B, K*M, D), clip indices (B, K)
    and their cosine scores (B, K, detached) (-1, zero tokens and score 0 for slots a video
    shorter than K clips cannot fill). Inference: ``models.select.select_clips``, the query
    stage's selection. Training: the same ranking (``selection_scores``: scores/temperature
    + ``bias`` (B, N), e.g. to force evidence clips in) as Gumbel-TopK with straight-through
    weights, so the answer loss reaches the indicators.
    """
    batch, n_clips, m_tokens, dim = memories.shape
    flat = memories.flatten(2)  # (B, N, M*D)
    if not training:
        index, relevance = select_clips(questions, indicators, k, temperature, bias)  # (B, K)
        pick = index.clamp_min(0).unsqueeze(-1).expand(-1, -1, flat.shape[-1])
        chosen = flat.gather(1, pick).masked_fill(index.unsqueeze(-1) < 0, 0.0)  # (B, K, M*D)
        return chosen.reshape(batch, k * m_tokens, dim), index, relevance
    cosine, scores = selection_scores(questions, indicators, temperature, bias)  # (B, A, N)
    take = min(k, n_clips)
    index, weights = gumbel_topk(scores, take, tau=tau, generator=generator)
    chosen = weights.to(flat.dtype) @ flat  # (B, take, M*D), one-hot forward
    relevance = cosine.detach().amax(dim=1).gather(1, index)  # (B, take)
    if take < k:  # pad to the constant budget
        chosen = F.pad(chosen, (0, 0, 0, k - take))
        index = F.pad(index, (0, k - take), value=-1)
        relevance = F.pad(relevance, (0, k - take))
    return chosen.reshape(batch, k * m_tokens, dim), index, relevance


def recall_at_k(scores: torch.Tensor, positives: torch.Tensor, k: int) -> float:
    """Share of questions (with >= 1 positive clip) that have a positive among their top K."""
    positives = positives.bool()
    rows = positives.any(dim=1)
    if not rows.any():
        return float("nan")
    top = scores[rows].topk(min(k, scores.shape[1]), dim=1).indices
    return positives[rows].gather(1, top).any(dim=1).float().mean().item()


def training_losses(
    model,
    answerer,
    frames: torch.Tensor | None,
    questions: list[str],
    video_of: torch.Tensor,
    positives: torch.Tensor,
    answer_ids: torch.Tensor,
    *,
    k: int,
    temperature: float = 0.1,
    tau: float = 1.0,
    detach_every: int | None = None,
    oracle: torch.Tensor | None = None,
    aux_head=None,
    clip_labels: torch.Tensor | None = None,
    aux_weight: float = 1.0,
    stack_head=None,
    scene_stack: torch.Tensor | None = None,
    tokens: torch.Tensor | None = None,
    pooled: torch.Tensor | None = None,
    slot_answers: torch.Tensor | None = None,
    place_head=None,
    stack_evidence: torch.Tensor | None = None,
    place_weight: float = 1.0,
    align_each_clip: torch.Tensor | None = None,
    shared_selection: bool = False,
    part_pooled: torch.Tensor | None = None,
    hidden: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Losses of one step over B videos with the same clip count and their questions.

    frames (B, N, T, H, W, 3) uint8, or (with a frozen backbone) their cached frame tokens
    ``tokens`` (B, N, T*P, D) and frames None; questions: Bq texts; video_of (Bq,) video row
    of each; positives (Bq, N) bool evidence clips; answer_ids (Bq, L); oracle (Bq,) bool:
    rows whose evidence clips are forced into the selection (helps the answerer learn before
    the selector does); ``pooled`` (Bq, H): the frozen text model's cached question
    embeddings (computed here when None); ``slot_answers`` (Bq,) bool: rows whose target is
    the selected slots holding evidence (``slot_answer_words``), set after selection;
    ``align_each_clip`` (Bq,) bool: rows whose alignment pulls up every evidence clip
    (``alignment_loss``); ``shared_selection``: a question offering two alternatives shares
    its K clips between them, as at inference (``models.select.selection_parts``),
    ``part_pooled`` (Bq, A, H) the cached pooled texts of those parts
    (``models.select.part_texts``); ``hidden`` (Bq, N) bool: clips kept out of each
    question's selection, forced or not (a video of K clips or fewer still gives all of them).
    Returns ``answer`` (CE), ``align`` (InfoNCE of
    the archive-stage and the video-conditioned question) and ``loss`` = answer + align
    (+ ``aux_weight`` * ``aux``, the BCE of ``aux_head`` (memories -> (B, N, C) logits)
    against ``clip_labels`` (B, N, C) when both are given; + ``aux_weight`` * ``stack``, the
    BCE of ``stack_head`` (memories -> (B, N, S, L)) against ``scene_stack`` (B, N, >= S, L);
    + ``place_weight`` * ``place``, the BCE of ``place_head`` (the answerer's memory states ->
    (Bq, K, S)) against ``stack_evidence`` (Bq, N, >= S) of the selected clips).
    """
    if tokens is not None:
        memories, indicators = stream_clips(model, tokens, detach_every=detach_every)
    else:
        memories, indicators = encode_video_clips(model, frames, detach_every=detach_every)
    q_raw, pooled = question_inputs(model, questions, pooled)  # (Bq, Q), (Bq, H)
    mem_q, ind_q = memories[video_of], indicators[video_of]  # (Bq, N, M, D), (Bq, N, Q)
    q_cond = model.condition_questions(q_raw, mem_q[:, -1])  # (Bq, Q)
    align = alignment_loss(q_raw, ind_q, positives, temperature, align_each_clip)
    align = align + alignment_loss(q_cond, ind_q, positives, temperature, align_each_clip)
    bias = selection_bias(positives, oracle, hidden, q_cond.dtype)  # (Bq, N) or None
    queries = q_cond
    if shared_selection:
        parts = encode_parts(model, questions, part_pooled)  # (Bq, A, Q)
        queries = condition_parts(model, parts, mem_q[:, -1])
    tokens, index, relevance = select_memories(
        queries, ind_q, mem_q, k, training=True, temperature=temperature, tau=tau, bias=bias
    )
    valid = index >= 0  # (Bq, K) filled slots
    if slot_answers is not None and slot_answers.any():
        evidence = positives.gather(1, index.clamp_min(0)) & valid  # (Bq, K)
        rows = slot_answers.nonzero().flatten()
        words = slot_answer_words(evidence[rows], relevance[rows].masked_fill(~valid[rows], -2))
        answer_ids = answer_ids.clone()
        answer_ids[rows] = answerer.encode_answers(words)
    answer, states = answerer(
        tokens, pooled, answer_ids, index, questions, relevance, memory_states=True
    )
    losses = {"loss": answer + align, "answer": answer.detach(), "align": align.detach()}

    def add(name: str, weight: float, value: torch.Tensor) -> None:
        losses["loss"] = losses["loss"] + weight * value
        losses[name] = value.detach()

    if place_head is not None and stack_evidence is not None:
        pick = index.clamp_min(0).unsqueeze(-1).expand(-1, -1, stack_evidence.shape[-1])
        targets = stack_evidence.gather(1, pick)[..., : place_head.depth]  # (Bq, K, S)
        add("place", place_weight, evidence_place_loss(place_head(states), targets, valid))
    if aux_head is not None and clip_labels is not None:
        aux = clip_label_loss(aux_head(memories), clip_labels, aux_head.groups)  # (B, N, C)
        add("aux", aux_weight, aux)
    if stack_head is not None and scene_stack is not None:
        stack = clip_label_loss(stack_head(memories), scene_stack[:, :, : stack_head.depth])
        add("stack", aux_weight, stack)
    return losses
