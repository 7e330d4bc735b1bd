"""The evaluation flow: held-out procedural worlds through the real pipeline, scored.

Worlds from seeds never used in training are written as mp4 files, ingested by the same
flow users run, and asked their ground-truth questions through the same query stage.
Ablations: (a) memory propagation off (memory reset at every clip, re-ingested), (b) the
last K clips instead of selection. A needle grid (video length x needle depth) is optional.
"""

from __future__ import annotations

import math
from itertools import product
from pathlib import Path

from prefect import flow, task
from pydantic import BaseModel, ConfigDict, Field

from actors.query import QueryStage
from actors.runtime import BoundModel, bind_model
from flows.eval_report import write_grid
from flows.ingest import ingest_flow
from flows.world import Obj, make_world
from flows.world_questions import QA, earlier_scene_seconds_in_clip, make_questions, needle_question
from flows.world_render import write_world_once
from models.answer import ANSWERER_DIR
from schemas.config import EncodeConfig, ModelConfig, QueryConfig, StorageConfig, VMemConfig
from schemas.records import QueryResult, Question, SelectedClip
from storage.lance import sql_literal

NEEDLE = Obj("star", "magenta", "large", "left")


class EvalConfig(BaseModel):
    """What an evaluation run measures; saved in its report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None  # VMem checkpoint dir; None: the trained default (models/bundled)
    workdir: str = "vmem-eval"
    seed: int = 5000  # held-out worlds: seed, seed+1, ... (training uses 1000-2199)
    videos: int = Field(3, ge=1)
    minutes: float = Field(10.0, gt=0)
    per_type: int = Field(4, ge=1)
    k: int = Field(4, ge=1)
    ablations: bool = True
    grid_minutes: list[float] = Field(default_factory=list)  # e.g. [1, 5, 15, 30, 60]
    grid_depths: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    grid_videos: int = Field(1, ge=1)  # needle videos per grid cell (world seeds seed, seed+1, ...)
    model_cache: str = "~/.cache/vmem/models"


def _config(cfg: EvalConfig, db: Path, propagate: bool = True) -> VMemConfig:
    return VMemConfig(
        model=ModelConfig(path=cfg.model, cache_dir=cfg.model_cache),
        storage=StorageConfig(db=str(db)),
        encode=EncodeConfig(propagate_memory=propagate),
        query=QueryConfig(top_k=cfg.k, max_videos=1),
    )


def archive_dir(cfg: EvalConfig) -> Path:
    """The held-out videos of one length: worlds of other lengths live in their own folder."""
    return Path(cfg.workdir) / "archive" / f"{cfg.minutes:g}min"


@task(name="write-worlds")
def write_worlds(cfg: EvalConfig) -> list[tuple[str, list[QA]]]:
    """The held-out videos (mp4 + ground truth) and their questions."""
    out = []
    for i in range(cfg.videos):
        seed = cfg.seed + i
        world = make_world(seed, cfg.minutes * 60.0)
        path = write_world_once(world, archive_dir(cfg) / f"world-{seed}.mp4")
        out.append((str(path.resolve()), make_questions(world, seed, per_type=cfg.per_type)))
    return out


def overlaps(clip: SelectedClip, evidence: list[tuple[float, float]]) -> bool:
    return any(clip.t_start < end and start < clip.t_end for start, end in evidence)


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


Asked = tuple[QA, list[SelectedClip], str | None, dict[int, tuple[float, float]]]


def expected_answer(qa: QA, spans: dict[int, tuple[float, float]]) -> str:
    """What a right answer reads: the ground truth, with a localisation range widened to
    the clips it overlaps (the answerer localises at clip granularity)."""
    if qa.qtype != "localisation":
        return qa.answer
    hit = [i for i, (t0, t1) in spans.items() if any(t0 < e1 and e0 < t1 for e0, e1 in qa.evidence)]
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


def select_for(
    bound: BoundModel,
    videos: list[tuple[str, list[QA]]],
    last_k: bool = False,
    answer: bool = False,
) -> list[Asked]:
    """Each question asked of its own video (SQL pre-filter on the uri), answered when
    ``answer``; with ``last_k`` the selection is replaced by the video's last K clips."""
    cfg = bound.config
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    out: list[Asked] = []
    for uri, qas in videos:
        clips = video_clips(stage, uri)
        if last_k:
            tail = clips[-cfg.query.top_k :]
            results = [QueryResult(qa.question, clips=list(tail)) for qa in qas]
        else:
            where = f"uri = {sql_literal(uri)}"
            results = stage.select([Question(question=qa.question, where=where) for qa in qas])
        if answer:
            stage.answer(results)
        spans = {c.clip_index: (c.t_start, c.t_end) for c in clips}
        out += [(qa, r.clips, r.answer, spans) for qa, r in zip(qas, results, strict=True)]
    return out


def video_clips(stage: QueryStage, uri: str) -> list[SelectedClip]:
    """Every stored clip of the video at ``uri``, in time order (score 0)."""
    stage.setup()
    rows = stage.store.scan(
        f"uri = {sql_literal(uri)} AND encoder = {sql_literal(stage.encoder)}",
        ["video_id", "uri", "clip_index", "t_start", "t_end"],
    ).to_pylist()
    rows.sort(key=lambda r: r["clip_index"])
    return [SelectedClip(**r, score=0.0) for r in rows]


def has_answerer(bound: BoundModel) -> bool:
    """Whether the checkpoint carries a trained answerer (else only selection is scored)."""
    return (Path(bound.checkpoint) / ANSWERER_DIR / "config.json").is_file()


def memory_budget(bound: BoundModel) -> dict:
    """Bytes stored per video-hour and the answering LM's input length (K x M tokens)."""
    q, m, d = bound.dims
    dec = bound.config.decode
    per_clip = m * d + 4 * m + 4 * q  # int8 tokens, float32 scales, float32 indicator(s)
    clips_per_hour = 3600.0 * dec.sample_fps / dec.clip_frames
    return {
        "bytes_per_video_hour": int(per_clip * clips_per_hour),
        "answer_input_tokens": bound.config.query.top_k * m,
    }


@task(name="needle-grid")
def needle_grid(cfg: EvalConfig) -> list[dict]:
    """recall@K of one needle scene per video, over video length x needle depth; a cell's
    recall is the share of its ``grid_videos`` videos (different worlds) whose needle was found."""
    archive = Path(cfg.workdir) / "grid"
    videos = []
    cells = product(cfg.grid_minutes, cfg.grid_depths, range(cfg.grid_videos))
    for minutes, depth, index in cells:
        world = make_world(cfg.seed + index, minutes * 60.0, needle=NEEDLE, needle_depth=depth)
        name = f"needle-{minutes:g}min-{depth:.2f}" + (f"-{index}" if index else "")
        path = write_world_once(world, archive / f"{name}.mp4")
        videos.append((minutes, depth, str(path.resolve()), needle_question(world, NEEDLE)))
    vcfg = _config(cfg, Path(cfg.workdir) / "db-grid")
    ingest_flow(str(archive), vcfg)
    bound = bind_model(vcfg)
    selected = select_for(bound, [(uri, [qa]) for _, _, uri, qa in videos])
    hits: dict[tuple[float, float], list[float]] = {}
    for (m, d, _, _), (qa, clips, _, _) in zip(videos, selected, strict=True):
        hits.setdefault((m, d), []).append(float(any(overlaps(c, qa.evidence) for c in clips)))
    return [
        {"minutes": m, "depth": d, "recall": sum(found) / len(found), "videos": len(found)}
        for (m, d), found in hits.items()
    ]


@flow(name="vmem-eval", log_prints=True)
def eval_flow(cfg: EvalConfig) -> dict:
    """Write held-out worlds -> ingest (and ablation a) -> ask -> score -> report."""
    videos = write_worlds(cfg)
    archive = str(archive_dir(cfg))
    full = _config(cfg, Path(cfg.workdir) / "db")
    ingest_flow(archive, full)
    bound = bind_model(full)
    answer = has_answerer(bound)
    report = {"config": cfg.model_dump(), "encoder": bound.encoder, **memory_budget(bound)}
    report.update(score(select_for(bound, videos, answer=answer)))
    if cfg.ablations:
        no_memory = _config(cfg, Path(cfg.workdir) / "db-no-memory", propagate=False)
        ingest_flow(archive, no_memory)
        report["ablation_no_memory"] = score(
            select_for(bind_model(no_memory), videos, answer=answer)
        )
        report["ablation_last_k"] = score(select_for(bound, videos, last_k=True, answer=answer))
    if cfg.grid_minutes:
        grid = needle_grid(cfg)
        report["needle_grid"] = grid
        report["needle_grid_files"] = write_grid(grid, Path(cfg.workdir))
    return report
