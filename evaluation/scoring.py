"""Scores of questions asked of held-out worlds: recall@K, grounding and answer IoU, answer
accuracy per type, and history split by where the earlier scene lies."""

from __future__ import annotations

import math

from schemas.records import SelectedClip
from world.questions import QA, earlier_scene_seconds_in_clip, overlapping

Asked = tuple[QA, list[SelectedClip], str | None, dict[int, tuple[float, float]]]


def overlaps(clip: SelectedClip, evidence: list[tuple[float, float]]) -> bool:
    """Whether a selected clip's time range overlaps the evidence (``overlapping``)."""
    return bool(overlapping(evidence, [(clip.t_start, clip.t_end)])[0])


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def expected_answer(qa: QA, spans: dict[int, tuple[float, float]]) -> str:
    """What a right answer reads: the ground truth, with a localisation range widened to
    the clips it overlaps (the answerer localises at clip granularity)."""
    if qa.qtype != "localisation":
        return qa.answer
    inside = overlapping(qa.evidence, list(spans.values()))  # (clips,) bool
    hit = [i for i, found in zip(spans, inside, strict=True) if found]
    if not hit:
        return qa.answer
    return f"{spans[min(hit)][0]:g}-{spans[max(hit)][1]:g}"


def parse_range(text: str | None) -> tuple[float, float] | None:
    """ "12-48" -> (12.0, 48.0); None when the answer is not a time range."""
    parts = (text or "").split("-")
    try:
        start, end = (float(p) for p in parts)
    except ValueError:
        return None
    return (start, end) if start <= end else None


def score(asked: list[Asked]) -> dict:
    """recall@K (an evidence clip among those selected), grounding IoU (localisation: the
    best-scoring selected clip vs the evidence range), answer IoU (the generated time range
    vs the evidence), answer accuracy per type (exact match with ``expected_answer``), and
    history's split into "memory_only" (``earlier_scene_seconds_in_clip`` 0 over the
    stored clips) and "in_clip"."""
    hits: dict[str, list[float]] = {}
    correct: dict[str, list[float]] = {}
    history: dict[str, list[float]] = {"memory_only": [], "in_clip": []}
    ious: list[float] = []
    answer_ious: list[float] = []
    for qa, clips, answer, spans in asked:
        if answer is not None:
            right = float(answer == expected_answer(qa, spans))
            correct.setdefault(qa.qtype, []).append(right)
            if qa.qtype == "history" and qa.evidence:
                starts = [t0 for t0, _ in spans.values()]
                part = "in_clip" if earlier_scene_seconds_in_clip(qa, starts) else "memory_only"
                history[part].append(right)
        if not qa.evidence:  # e.g. "how many ... ?" with answer 0: nothing to find
            continue
        hits.setdefault(qa.qtype, []).append(float(any(overlaps(c, qa.evidence) for c in clips)))
        if qa.qtype == "localisation" and clips:
            best = max(clips, key=lambda c: c.score)
            ious.append(max(iou((best.t_start, best.t_end), e) for e in qa.evidence))
        if qa.qtype == "localisation" and answer is not None:
            said = parse_range(answer)
            answer_ious.append(max(iou(said, e) for e in qa.evidence) if said else 0.0)
    every = [h for values in hits.values() for h in values]
    out = {
        "recall_at_k": _mean(every),
        "recall_by_type": {t: _mean(v) for t, v in sorted(hits.items())},
        "grounding_iou": _mean(ious),
        "questions": len(every),
    }
    if correct:
        out["answer_accuracy"] = {t: _mean(v) for t, v in sorted(correct.items())}
        out["answer_accuracy_all"] = _mean([c for v in correct.values() for c in v])
        out["answer_iou"] = _mean(answer_ious)
        out["history_by_clip"] = {
            part: {"questions": len(v), "accuracy": _mean(v)} for part, v in history.items()
        }
    return out


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan
