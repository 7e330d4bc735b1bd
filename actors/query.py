"""Question answering over stored memories: two-stage adaptive memory selection.

1. Archive stage: a video-independent question embedding searches the ANN index of all
   clip indicators (with the SQL pre-filter) for candidate videos.
2. Video stage (the paper's selection): per candidate video, the question conditioned on
   that video's last memory re-scores its clips; the top K are kept in time order
   (``models.select.select_clips``, the held-out evaluation's selection too).
Nothing is re-encoded: only the question goes through the model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch

from checkpoints.registry import load_model
from models.answer import ANSWERER_DIR, MemoryAnswerer, readable_answer
from models.select import (
    archive_queries,
    condition_parts,
    part_texts,
    question_inputs,
    select_clips,
)
from schemas.config import QueryConfig, StorageConfig
from schemas.records import QueryResult, Question, SelectedClip, StageError
from storage.db import in_list
from storage.memories import MemoryStore, encoder_scope
from storage.sql import SqlError, compile_sql, compile_where, execute

CLIP_COLUMNS = ["video_id", "clip_index", "uri", "t_start", "t_end", "indicator"]


class QueryStage:
    """Selects memories for questions (the Ray query actor wraps it)."""

    def __init__(self, checkpoint: str, encoder: str, storage: StorageConfig, query: QueryConfig):
        self.checkpoint, self.encoder = checkpoint, encoder
        self.storage_cfg, self.cfg = storage, query
        self.model = None
        self.store: MemoryStore | None = None
        self.answerer: MemoryAnswerer | None = None

    def setup(self) -> None:
        """Load the question side of the model and open the store (inside the actor)."""
        if self.model is None:
            self.model = load_model(self.checkpoint)
            self.store = MemoryStore(self.storage_cfg)

    # ---- selection -----------------------------------------------------------------------
    def select(
        self, questions: list[Question], with_memory: bool = False, with_answer: bool = False
    ) -> list[QueryResult]:
        """The selected clips for each question; a bad question gets an error, not a raise."""
        results = self._select_all(questions, with_memory)
        if with_answer:
            self.answer(results)
        return results

    def _select_all(self, questions: list[Question], with_memory: bool) -> list[QueryResult]:
        self.setup()
        results = [QueryResult(q.question, q.id) for q in questions]
        filters: dict[int, str] = {}
        for i, q in enumerate(questions):
            try:
                filters[i] = self._filter(q.where)
            except SqlError as exc:
                results[i].error = StageError("where", str(exc))
        if not filters:
            return results
        vectors, parts = self._embed_questions([q.question for q in questions])
        searched = archive_queries(vectors, self.model.config)  # (B, indicator width)
        for where, rows in self._group_by_filter(filters).items():
            try:  # archive stage: one batched ANN search per distinct pre-filter
                hits = self.store.search(searched[rows], where, self.cfg.candidates, ["video_id"])
            except Exception as exc:  # a storage error fails these questions, not the batch
                for i in rows:
                    results[i].error = StageError("search", f"{type(exc).__name__}: {exc}")
                continue
            hits = hits.sort_by([("query_index", "ascending"), ("score", "descending")])
            found: dict[int, list[str]] = {}  # query row -> candidate videos, best hit first
            for row, video_id in zip(
                hits.column("query_index").to_pylist(),
                hits.column("video_id").to_pylist(),
                strict=True,
            ):
                found.setdefault(row, []).append(video_id)
            for row, i in enumerate(rows):
                candidates = list(dict.fromkeys(found.get(row, [])))[: self.cfg.max_videos * 2]
                k = questions[i].k or self.cfg.top_k
                try:
                    results[i].clips = self._select(parts[i], candidates, where, k, with_memory)
                except Exception as exc:
                    results[i].error = StageError("search", f"{type(exc).__name__}: {exc}")
        return results

    @staticmethod
    def _group_by_filter(filters: dict[int, str]) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, where in filters.items():
            groups.setdefault(where, []).append(i)
        return groups

    def _select(
        self, parts: np.ndarray, candidates: list[str], where: str, k: int, with_memory: bool
    ):
        """Video stage over the candidate videos, then the best videos' clips (+ memories)."""
        if not candidates:
            return []
        per_video = self._video_stage(parts, candidates, where, k)
        per_video.sort(key=lambda clips: -max(c.score for c in clips))
        chosen = [clip for clips in per_video[: self.cfg.max_videos] for clip in clips]
        if with_memory and chosen:
            memories = self.store.fetch_memories(
                [(c.video_id, c.clip_index) for c in chosen], self.encoder
            )
            for clip in chosen:
                clip.memory = memories[(clip.video_id, clip.clip_index)]
        return chosen

    def _video_stage(self, parts: np.ndarray, video_ids: list[str], where: str, k: int):
        """Each candidate video's K clips (``models.select.select_clips``): its clips in range
        re-scored by the question's queries (``parts`` (A, Q), ``_embed_questions``), each
        conditioned on the video's last memory in range."""
        table = self.store.scan(f"({where}) AND {in_list('video_id', video_ids)}", CLIP_COLUMNS)
        groups: dict[str, list[dict]] = {}
        for row in table.to_pylist():
            groups.setdefault(row["video_id"], []).append(row)
        for rows in groups.values():
            rows.sort(key=lambda r: r["clip_index"])  # time order, as select_clips reads them
        # the memory of the last clip in range condenses everything the question may ask about
        last_keys = [(v, rows[-1]["clip_index"]) for v, rows in groups.items()]
        last_memory = self.store.fetch_memories(last_keys, self.encoder)
        selected = []
        with torch.inference_mode():
            memories = torch.from_numpy(np.stack([last_memory[key] for key in last_keys]))
            queries = torch.from_numpy(parts).expand(len(last_keys), -1, -1)  # (V, A, Q)
            conditioned = condition_parts(self.model, queries, memories)  # (V, A, Q)
            for (video_id, _), q_video in zip(last_keys, conditioned, strict=True):
                rows = groups[video_id]
                indicators = np.stack([np.asarray(r["indicator"], dtype=np.float32) for r in rows])
                index, fit = select_clips(q_video[None], torch.from_numpy(indicators[None]), k)
                picks = zip(index[0].tolist(), fit[0].tolist(), strict=True)
                selected.append([self._clip(rows[j], score) for j, score in picks if j >= 0])
        return selected

    @staticmethod
    def _clip(row: dict, score: float) -> SelectedClip:
        return SelectedClip(
            video_id=row["video_id"],
            uri=row["uri"],
            clip_index=row["clip_index"],
            t_start=float(row["t_start"]),
            t_end=float(row["t_end"]),
            score=score,
        )

    # ---- answers -----------------------------------------------------------------------
    def answer(self, results: list[QueryResult]) -> None:
        """Fill ``answer`` from each best video's selected memories (K x M tokens exactly).

        One memory fetch, one question-encoder pass and one generation for the batch."""
        self.setup()
        answerer = self._load_answerer()
        k, m, d = answerer.config.k, answerer.config.memory_tokens, answerer.config.memory_dim
        todo = [r for r in results if r.error is None and r.clips]
        if not todo:
            return
        chosen = []  # per result: the best video's clips (videos come best first), at most K
        for result in todo:
            best = result.clips[0].video_id
            chosen.append([c for c in result.clips if c.video_id == best][:k])
        keys = [(c.video_id, c.clip_index) for clips in chosen for c in clips]
        memories = self.store.fetch_memories(keys, self.encoder)
        tokens = np.zeros((len(todo), k, m, d), dtype=np.float32)
        index = np.full((len(todo), k), -1, dtype=np.int64)  # -1: an empty slot
        relevance = np.zeros((len(todo), k), dtype=np.float32)  # the video-stage scores
        for row, clips in enumerate(chosen):
            for slot, clip in enumerate(clips):
                tokens[row, slot] = memories[(clip.video_id, clip.clip_index)]
                index[row, slot] = clip.clip_index
                relevance[row, slot] = clip.score
        with torch.inference_mode():
            texts = [r.question for r in todo]
            _, pooled = question_inputs(self.model, texts)
            flat = torch.from_numpy(tokens.reshape(len(todo), k * m, d))
            answers = answerer.generate_answers(
                flat, pooled, torch.from_numpy(index), texts, torch.from_numpy(relevance)
            )
        for result, clips, text in zip(todo, chosen, answers, strict=True):
            result.answer = readable_answer(text, [(c.t_start, c.t_end) for c in clips])

    def _load_answerer(self) -> MemoryAnswerer:
        if self.answerer is None:
            folder = Path(self.checkpoint) / ANSWERER_DIR
            if not (folder / "config.json").is_file():
                raise ValueError(
                    f"the model {self.checkpoint} has no answerer: train one with `vmem train`"
                )
            self.answerer = MemoryAnswerer.from_pretrained(str(folder)).eval()
        return self.answerer

    # ---- SQL -----------------------------------------------------------------------------
    def sql(self, text: str) -> pa.Table:
        """Run one statement of the SQL-like search API (raises SqlError on bad SQL)."""
        self.setup()
        compiled = compile_sql(text)
        if compiled.table == "memories":
            compiled = replace(compiled, where=encoder_scope(self.encoder, compiled.where))
        vector = None
        if compiled.relevance:
            vector = archive_queries(self._embed([compiled.relevance]), self.model.config)[0]
        return execute(self.store, compiled, vector)

    # ---- helpers -------------------------------------------------------------------------
    def _filter(self, where: str | None) -> str:
        """A question's WHERE (raises SqlError) within this encoder's rows."""
        return encoder_scope(self.encoder, compile_where(where) if where else None)

    def _embed_questions(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """One question-encoder pass over every distinct text: each question (B, Q), for
        the archive stage, and its selection queries (B, A, Q), for the video stage (an
        ordering question's two alternatives, any other question itself)."""
        queries = part_texts(texts)
        distinct = list(dict.fromkeys([*texts, *(t for row in queries for t in row)]))
        found = dict(zip(distinct, self._embed(distinct), strict=True))
        vectors = np.stack([found[t] for t in texts])
        return vectors, np.stack([[found[t] for t in row] for row in queries])

    def _embed(self, texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode_questions(texts).float().numpy()


def make_query_pool(size: int, *args) -> ray.util.ActorPool:
    """A pool of query actors (fractional CPUs: they mostly wait on storage)."""
    actor_cls = ray.remote(num_cpus=0.25)(QueryStage)
    actors = [actor_cls.remote(*args) for _ in range(size)]
    ray.get([a.setup.remote() for a in actors])
    return ray.util.ActorPool(actors)
