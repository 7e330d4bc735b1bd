"""Question answering over stored memories: two-stage adaptive memory selection.

1. Archive stage: a video-independent question embedding searches the ANN index of all
   clips' archive keys (with the SQL pre-filter) for candidate videos.
2. Video stage (the paper's selection, ``actors.video_stage``): per candidate video, the
   question conditioned on that video's last memory re-scores its clips; the top K are
   kept in time order (``models.select.select_clips``, the held-out evaluation's too).
Questions are batched end to end: one encoder pass, and per distinct pre-filter one
search, one scan of the candidate videos and one vectorised scoring.
Nothing is re-encoded: only the question goes through the model.
Only the memories of videos whose catalog row says ``done`` are shown (selection and SQL
alike): ``storage.catalog.DoneVideos``, re-read only when the catalog changes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import ray
import torch

from actors.video_stage import VideoClips, candidate_videos, select_in_videos
from checkpoints.registry import load_model
from models.answer import ANSWERER_DIR, MemoryAnswerer, readable_answer
from models.select import archive_queries, part_texts, question_inputs
from schemas.config import QueryConfig, StorageConfig
from schemas.records import QueryResult, Question, SelectedClip, StageError
from storage.catalog import DoneVideos, rows_of_videos
from storage.memories import MemoryStore, encoder_scope
from storage.sql import SqlError, compile_sql, compile_where, execute


class QueryStage:
    """Selects memories for questions (the Ray query actor wraps it)."""

    def __init__(self, checkpoint: str, encoder: str, storage: StorageConfig, query: QueryConfig):
        self.checkpoint, self.encoder = checkpoint, encoder
        self.storage_cfg, self.cfg = storage, query
        self.model = None
        self.store: MemoryStore | None = None
        self.done: DoneVideos | None = None  # the videos whose memories may be shown
        self.answerer: MemoryAnswerer | None = None

    def setup(self) -> None:
        """Load the question side of the model and open the store (inside the actor)."""
        if self.model is None:
            self.model = load_model(self.checkpoint)
            self.store = MemoryStore(self.storage_cfg, as_of=self.cfg.as_of)  # None: latest
            self.done = DoneVideos(self.store.db)

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
        filters: dict[int, str | None] = {}  # question -> its compiled WHERE
        for i, q in enumerate(questions):
            try:
                filters[i] = compile_where(q.where) if q.where else None
            except SqlError as exc:
                results[i].error = StageError("where", str(exc))
        if not filters:
            return results
        vectors, parts = self._embed_questions([q.question for q in questions])
        for where, rows in self._group_by_filter(filters).items():
            ks = [questions[i].k or self.cfg.top_k for i in rows]
            try:  # one batched search, one scan and one scoring per distinct pre-filter
                chosen = self._select_group(vectors[rows], parts[rows], where, ks, with_memory)
            except Exception as exc:  # a storage error fails these questions, not the batch
                for i in rows:
                    results[i].error = StageError("search", f"{type(exc).__name__}: {exc}")
                continue
            for i, clips in zip(rows, chosen, strict=True):
                results[i].clips = clips
        return results

    @staticmethod
    def _group_by_filter(filters: dict[int, str | None]) -> dict[str | None, list[int]]:
        groups: dict[str | None, list[int]] = {}
        for i, where in filters.items():
            groups.setdefault(where, []).append(i)
        return groups

    def _select_group(
        self,
        vectors: np.ndarray,
        parts: np.ndarray,
        where: str | None,
        ks: list[int],
        with_memory: bool,
    ) -> list[list[SelectedClip]]:
        """Questions of one pre-filter: archive stage (candidate videos), video stage (each
        video's K clips), then the best ``max_videos`` videos of each question. Both leave
        the encoder out of their filters while the table holds only this encoder's clips
        (the predicate costs more than the search itself at 1M clips)."""
        scope = where if self.store.holds_only(self.encoder) else encoder_scope(self.encoder, where)
        hits = self.store.search(
            archive_queries(vectors),
            scope,
            self.cfg.candidates,
            ["video_id"],
            nprobes=self.cfg.nprobes,
            refine_factor=self.cfg.refine_factor,
        )
        # only videos the catalog says are done: not one whose catalog commit is still to come
        # (or never came: a killed writer), not one deleted from its source
        hits = rows_of_videos(hits, self.done.ids())
        candidates = candidate_videos(hits, len(vectors), self.cfg.max_videos * 2)
        wanted = list(dict.fromkeys(v for videos in candidates for v in videos))
        if not wanted:
            return [[] for _ in candidates]
        clips = VideoClips.fetch(self.store, self.model, wanted, scope)
        per_question = select_in_videos(self.model, parts, candidates, clips, ks)
        out = []
        for videos in per_question:
            videos = [v for v in videos if v[1]]
            videos.sort(key=lambda v: -max(v[2]))  # best-fitting video first
            out.append(
                [
                    clips.clip(video, row, fit, with_memory)
                    for video, rows, fits in videos[: self.cfg.max_videos]
                    for row, fit in zip(rows, fits, strict=True)
                ]
            )
        return out

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
            vector = archive_queries(self._embed([compiled.relevance]))[0]
        visible = self.done.ids() if compiled.table == "memories" else None
        return execute(self.store, compiled, vector, visible)

    # ---- helpers -------------------------------------------------------------------------
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
