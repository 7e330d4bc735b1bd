"""Held-out metrics of a training run on rendered worlds (no codec, no pipeline): recall@K
against random, and answer accuracy per question type."""

from __future__ import annotations

import math

import numpy as np
import torch

from models.answer import SLOT_RANGE, MemoryAnswerer
from models.select import clip_scores, question_inputs, selection_parts
from models.vmem import VMemModel
from training.data import VideoExample
from training.losses import (
    encode_video_clips,
    forcing_bias,
    recall_at_k,
    select_memories,
    stream_clips,
)


def slots_to_clips(answer: str, index: list[int]) -> str | None:
    """A slot answer ("1 - 2") as the clip indices of those slots ("1 4 - 1 5")."""
    found = SLOT_RANGE.match(answer.replace(" ", ""))  # the parser of readable_answer
    if found is None:
        return None
    first, last = int(found.group(1)) - 1, int(found.group(2)) - 1
    if not 0 <= first <= last < len(index) or index[last] < 0:
        return None
    return " ".join([*str(index[first]), "-", *str(index[last])])


def random_recall(positives: np.ndarray, k: int) -> float:
    """Expected recall@K of picking K clips at random: 1 - C(N-P, K) / C(N, K), averaged."""
    rows = [p for p in positives if p.any()]
    if not rows:
        return float("nan")
    n = len(rows[0])
    return float(np.mean([1 - math.comb(n - int(p.sum()), k) / math.comb(n, k) for p in rows]))


@torch.no_grad()
def evaluate(
    model: VMemModel,
    answerer: MemoryAnswerer,
    examples: list[VideoExample],
    k: int,
    oracle: bool = False,
    record: list[tuple[str, str, str, str]] | None = None,
    reset_every_clip: bool = False,
    split_offered: bool = True,
):
    """Held-out recall@K (archive-stage and video-conditioned questions), its random baseline,
    and exact-match answer accuracy per question type (TopK selection, greedy answers).
    ``oracle``: the answers read the evidence clips first (forced into the K), the rest by
    score: what the answerer makes of the right memories, whatever the selection does.
    ``record``: when given, (type, question, answer, reference) of each question is added.
    ``reset_every_clip``: ablation (a), every clip encoded from the initial memory.
    ``split_offered``: a question offering two alternatives shares its K clips between them
    (``models.select.selection_parts``, as the query stage selects); False: ranked whole."""
    model.eval(), answerer.eval()
    stats: dict[str, list[float]] = {"recall_raw": [], "recall_cond": [], "recall_random": []}
    rows: list[tuple[str, str, str, str]] = []  # (type, question, answer, reference)
    for ex in examples:
        if ex.tokens is not None:
            tokens = torch.from_numpy(ex.tokens).unsqueeze(0)
            memories, indicators = (t[0] for t in stream_clips(model, tokens, reset_every_clip))
        else:
            frames = torch.from_numpy(ex.frames)
            memories, indicators = encode_video_clips(model, frames, reset_every_clip)
        q_raw, pooled = question_inputs(model, ex.questions)
        n_q = len(ex.questions)
        mem, ind = memories.expand(n_q, -1, -1, -1), indicators.expand(n_q, -1, -1)
        q_cond = model.condition_questions(q_raw, mem[:, -1])
        pos = torch.from_numpy(ex.positives)
        kk = min(k, ex.n_clips)
        if kk < ex.n_clips:  # with every clip selected recall is trivially 1: skip
            stats["recall_raw"].append(recall_at_k(clip_scores(q_raw, ind), pos, kk))
            stats["recall_cond"].append(recall_at_k(clip_scores(q_cond, ind), pos, kk))
            stats["recall_random"].append(random_recall(ex.positives, kk))
        bias = forcing_bias(pos, q_cond.dtype) if oracle else None
        queries = selection_parts(model, ex.questions, mem[:, -1]) if split_offered else q_cond
        tokens, index, relevance = select_memories(queries, ind, mem, k, training=False, bias=bias)
        answers = answerer.generate_answers(tokens, pooled, index, ex.questions, relevance)
        for row, (qtype, got, want) in enumerate(zip(ex.qtypes, answers, ex.answers, strict=True)):
            if qtype == "localisation":  # slots -> the clip indices they hold
                got = slots_to_clips(got, index[row].tolist())
            rows.append((qtype, ex.questions[row], got, " ".join(want)))
    correct: dict[str, list[bool]] = {}
    for qtype, _, got, want in rows:
        correct.setdefault(qtype, []).append(got == want)
    out = {name: float(np.nanmean(v)) if v else float("nan") for name, v in stats.items()}
    out.update({f"accuracy_{t}": float(np.mean(v)) for t, v in sorted(correct.items())})
    if record is not None:
        record.extend(rows)
    model.train(), answerer.train()
    return out
