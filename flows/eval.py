"""The evaluation flow (``vmem eval``): held-out procedural worlds through the real pipeline.

Worlds from seeds never used in training are written as mp4 files, ingested by the same
flow users run, and asked their ground-truth questions through the same query stage.
Ablations: (a) memory propagation off (memory reset at every clip, re-ingested), (b) the
last K clips instead of selection. A needle grid (video length x needle depth) is optional.
"""

from __future__ import annotations

from itertools import product
from pathlib import Path

from prefect import flow, task

from actors.runtime import bind_model
from evaluation.asking import (
    NEEDLE,
    archive_dir,
    has_answerer,
    memory_budget,
    pipeline_config,
    select_for,
)
from evaluation.grid import write_grid
from evaluation.scoring import overlaps, score
from flows.ingest import ingest_flow
from schemas.eval_config import EvalConfig
from world.questions import QA, make_questions, needle_question
from world.render import write_world_once
from world.scenes import make_world


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
    vcfg = pipeline_config(cfg, Path(cfg.workdir) / "db-grid")
    bound = bind_model(vcfg)
    ingest_flow(str(archive), vcfg, bound=bound)
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
    full = pipeline_config(cfg, Path(cfg.workdir) / "db")
    bound = bind_model(full)
    ingest_flow(archive, full, bound=bound)
    answer = has_answerer(bound)
    report = {"config": cfg.model_dump(), "encoder": bound.encoder, **memory_budget(bound)}
    report.update(score(select_for(bound, videos, answer=answer)))
    if cfg.ablations:
        no_memory = pipeline_config(cfg, Path(cfg.workdir) / "db-no-memory", propagate=False)
        reset = bind_model(no_memory)  # another encoder id: memories reset at every clip
        ingest_flow(archive, no_memory, bound=reset)
        report["ablation_no_memory"] = score(select_for(reset, videos, answer=answer))
        report["ablation_last_k"] = score(select_for(bound, videos, last_k=True, answer=answer))
    if cfg.grid_minutes:
        grid = needle_grid(cfg)
        report["needle_grid"] = grid
        report["needle_grid_files"] = write_grid(grid, Path(cfg.workdir))
    return report
