"""The video stage for a batch of questions, with array operations end to end.

The archive stage names each question's candidate videos; here every candidate video's
clips (within the question's WHERE) are read in ONE scan per batch, their indicators read
back from their memories in one pass of the model's indicator head, the questions
conditioned on each (question, video) pair's last memory in one pass of the conditioner,
and each pair's K clips picked by ``models.select.select_clips`` (pairs of videos with the
same number of clips go through it together). Python touches only what is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from models.select import condition_parts, select_clips
from schemas.records import SelectedClip
from storage.memories import MEMORY_COLUMNS, MemoryStore, memory_array

CLIP_COLUMNS = ["uri", "t_start", "t_end", *MEMORY_COLUMNS]


def candidate_videos(hits: pa.Table, n_queries: int, limit: int) -> list[list[str]]:
    """Each query's first ``limit`` distinct videos, best hit first, from an archive-stage
    search result (``query_index``, ``video_id``, ``score``)."""
    if hits.num_rows == 0:
        return [[] for _ in range(n_queries)]
    query = hits["query_index"].to_numpy()
    videos = hits["video_id"].combine_chunks().dictionary_encode()
    codes = videos.indices.to_numpy()
    order = np.lexsort((-hits["score"].to_numpy(), query))  # by query, best score first
    query, codes = query[order], codes[order]
    _, first = np.unique(query * len(videos.dictionary) + codes, return_index=True)
    first.sort()  # each (query, video) once, at its best hit, in hit order
    query, codes = query[first], codes[first]
    rank = np.arange(len(query)) - np.searchsorted(query, query, side="left")
    keep = rank < limit
    names = videos.dictionary.to_pylist()
    out: list[list[str]] = [[] for _ in range(n_queries)]
    for q, code in zip(query[keep].tolist(), codes[keep].tolist(), strict=True):
        out[q].append(names[code])
    return out


@dataclass
class VideoClips:
    """The clips of some videos, sorted by (video, clip index), as arrays."""

    videos: dict[str, tuple[int, int]]  # video_id -> its rows [start, end)
    clip_index: np.ndarray  # (R,) int
    uri: list[str]  # (R,)
    t_start: np.ndarray  # (R,) float
    t_end: np.ndarray  # (R,) float
    memory: torch.Tensor  # (R, M, D) dequantised
    indicators: torch.Tensor  # (R, G*Q) unit, read back from the memories

    @classmethod
    def fetch(
        cls, store: MemoryStore, model, video_ids: list[str], where: str | None
    ) -> VideoClips:
        """One scan for all ``video_ids`` (within ``where``), one indicator-head pass."""
        table = store.clips_of(video_ids, where, CLIP_COLUMNS)
        ids = table["video_id"].combine_chunks().dictionary_encode()
        codes = ids.indices.to_numpy()
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else []
        ends = np.r_[starts[1:], len(codes)] if len(codes) else []
        names = ids.dictionary.to_pylist()
        memory = torch.from_numpy(memory_array(table))
        with torch.inference_mode():
            indicators = model.streaming.indicators(memory).float()
        return cls(
            videos={names[codes[s]]: (int(s), int(e)) for s, e in zip(starts, ends, strict=True)},
            clip_index=table["clip_index"].to_numpy(),
            uri=table["uri"].to_pylist(),
            t_start=pc.cast(table["t_start"], pa.float64()).to_numpy(),
            t_end=pc.cast(table["t_end"], pa.float64()).to_numpy(),
            memory=memory,
            indicators=indicators,
        )

    def clip(self, video_id: str, row: int, score: float, with_memory: bool) -> SelectedClip:
        """Row ``row`` as a selected clip of ``video_id`` (with its memory tokens if asked)."""
        return SelectedClip(
            video_id=video_id,
            uri=self.uri[row],
            clip_index=int(self.clip_index[row]),
            t_start=float(self.t_start[row]),
            t_end=float(self.t_end[row]),
            score=score,
            memory=self.memory[row].numpy() if with_memory else None,
        )


def select_in_videos(
    model,
    parts: np.ndarray,
    candidates: list[list[str]],
    clips: VideoClips,
    ks: list[int],
) -> list[list[tuple[str, list[int], list[float]]]]:
    """Each question's K clips in each of its candidate videos.

    parts (B, A, Q): each question's selection queries; ``candidates``: its videos; ``ks``:
    its K. Returns per question, per candidate video found: (video_id, the chosen rows of
    ``clips`` in time order, their fits)."""
    pairs = [(q, v) for q, videos in enumerate(candidates) for v in videos if v in clips.videos]
    out: list[list[tuple[str, list[int], list[float]]]] = [[] for _ in candidates]
    if not pairs:
        return out
    spans = [clips.videos[v] for _, v in pairs]
    with torch.inference_mode():
        last = clips.memory[[end - 1 for _, end in spans]]  # (P, M, D): each video's last
        queries = torch.from_numpy(parts[[q for q, _ in pairs]])  # (P, A, Q)
        conditioned = condition_parts(model, queries, last)  # (P, A, Q)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for p, ((q, _), (start, end)) in enumerate(zip(pairs, spans, strict=True)):
            by_shape.setdefault((end - start, ks[q]), []).append(p)
        picked: dict[int, tuple[list[int], list[float]]] = {}
        for (n_clips, k), group in by_shape.items():
            rows = torch.stack(
                [torch.arange(spans[p][0], spans[p][0] + n_clips) for p in group]
            )  # (G, N)
            index, fit = select_clips(conditioned[group], clips.indicators[rows], k)
            for p, chosen, fits in zip(group, index.tolist(), fit.tolist(), strict=True):
                kept = [(rows_j, f) for rows_j, f in zip(chosen, fits, strict=True) if rows_j >= 0]
                picked[p] = ([spans[p][0] + j for j, _ in kept], [f for _, f in kept])
    for p, (q, video) in enumerate(pairs):
        out[q].append((video, *picked[p]))
    return out
