"""Held-out worlds through the real pipeline: their configs, asking each world's questions of
its own video through the query stage, and what a model stores per video-hour."""

from __future__ import annotations

from pathlib import Path

from actors.query import QueryStage
from actors.runtime import BoundModel
from evaluation.scoring import Asked
from models.answer import ANSWERER_DIR
from schemas.config import EncodeConfig, ModelConfig, QueryConfig, StorageConfig, VMemConfig
from schemas.eval_config import EvalConfig
from schemas.records import QueryResult, Question, SelectedClip
from storage.db import sql_literal
from storage.memories import encoder_scope
from world.questions import QA
from world.scenes import Obj

NEEDLE = Obj("star", "magenta", "large", "left")


def pipeline_config(cfg: EvalConfig, db: Path, propagate: bool = True) -> VMemConfig:
    return VMemConfig(
        model=ModelConfig(path=cfg.model, cache_dir=cfg.model_cache),
        storage=StorageConfig(db=str(db)),
        encode=EncodeConfig(propagate_memory=propagate),
        query=QueryConfig(top_k=cfg.k, max_videos=1),
    )


def archive_dir(cfg: EvalConfig) -> Path:
    """The held-out videos of one length: worlds of other lengths live in their own folder."""
    return Path(cfg.workdir) / "archive" / f"{cfg.minutes:g}min"


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
        encoder_scope(stage.encoder, f"uri = {sql_literal(uri)}"),
        ["video_id", "uri", "clip_index", "t_start", "t_end"],
    ).to_pylist()
    rows.sort(key=lambda r: r["clip_index"])
    return [SelectedClip(**r, score=0.0) for r in rows]


def has_answerer(bound: BoundModel) -> bool:
    """Whether the checkpoint carries a trained answerer (else only selection is scored)."""
    return (Path(bound.checkpoint) / ANSWERER_DIR / "config.json").is_file()


def memory_budget(bound: BoundModel) -> dict:
    """Bytes stored per video-hour and the answering LM's input length (K x M tokens)."""
    key_width, m, d = bound.dims
    dec = bound.config.decode
    per_clip = m * d + 4 * m + 4 * key_width  # int8 tokens, float32 scales, float32 key
    clips_per_hour = 3600.0 * dec.sample_fps / dec.clip_frames
    return {
        "bytes_per_video_hour": int(per_clip * clips_per_hour),
        "answer_input_tokens": bound.config.query.top_k * m,
    }
