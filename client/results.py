"""What ``ask`` returns, the same from the archive itself and over HTTP: the videos that fit
a question, best first, each with its selected clips in time order, and the answer once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import pyarrow as pa

if TYPE_CHECKING:
    import pandas

    from schemas.records import QueryResult

CLIP_SCHEMA = pa.schema(
    [
        ("question", pa.string()),
        ("video_rank", pa.int32()),  # 0: the best-fitting video
        ("video_id", pa.string()),
        ("uri", pa.string()),
        ("clip_index", pa.int32()),
        ("t_start", pa.float32()),
        ("t_end", pa.float32()),
        ("score", pa.float32()),
        ("answer", pa.string()),
    ]
)


@dataclass(frozen=True)
class ClipHit:
    """One selected clip: its time range in the video and how well it fits."""

    clip_index: int
    t_start: float
    t_end: float
    score: float
    thumbnail_url: str | None = None  # over HTTP: the clip's thumbnail endpoint


@dataclass(frozen=True)
class VideoHit:
    """One video that fits the question, with its selected clips in time order."""

    video_id: str
    uri: str
    score: float  # its best clip's score
    clips: list[ClipHit] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The video's file name."""
        return PurePosixPath(self.uri).name


@dataclass(frozen=True)
class AskResult:
    """The selection for one question: ``videos`` best first; ``answer`` when asked for."""

    question: str
    videos: list[VideoHit] = field(default_factory=list)
    answer: str | None = None

    @classmethod
    def from_selection(cls, result: QueryResult) -> AskResult:
        """From the query stage's result (clips grouped per video, best video first)."""
        clips: dict[str, list[Any]] = {}
        for clip in result.clips:
            clips.setdefault(clip.video_id, []).append(clip)
        videos = [
            VideoHit(
                video_id=video_id,
                uri=group[0].uri,
                score=max(c.score for c in group),
                clips=[ClipHit(c.clip_index, c.t_start, c.t_end, c.score) for c in group],
            )
            for video_id, group in clips.items()
        ]
        return cls(result.question, videos, result.answer)

    @classmethod
    def from_json(cls, question: str, pages: list[dict]) -> AskResult:
        """From the pages of ``POST /v1/search`` (the answer comes on the first page)."""
        videos = [
            VideoHit(
                video_id=hit["video_id"],
                uri=hit["uri"],
                score=hit["score"],
                clips=[
                    ClipHit(
                        c["clip_index"], c["t_start"], c["t_end"], c["score"], c["thumbnail_url"]
                    )
                    for c in hit["clips"]
                ],
            )
            for page in pages
            for hit in page["videos"]
        ]
        return cls(question, videos, pages[0].get("answer") if pages else None)

    def to_query_result(self, question_id: str | None = None) -> QueryResult:
        """As the query stage's result (the rows of ``vmem answer`` are made from it)."""
        from schemas.records import QueryResult, SelectedClip

        clips = [
            SelectedClip(v.video_id, v.uri, c.clip_index, c.t_start, c.t_end, c.score)
            for v in self.videos
            for c in v.clips
        ]
        return QueryResult(self.question, question_id, clips, answer=self.answer)

    def rows(self) -> list[dict]:
        """One row per selected clip (the answer on each, for tables and JSON lines)."""
        return [
            {
                "question": self.question,
                "video_rank": rank,
                "video_id": video.video_id,
                "uri": video.uri,
                "clip_index": clip.clip_index,
                "t_start": clip.t_start,
                "t_end": clip.t_end,
                "score": clip.score,
                "answer": self.answer,
            }
            for rank, video in enumerate(self.videos)
            for clip in video.clips
        ]

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows(), schema=CLIP_SCHEMA)

    def to_pandas(self) -> pandas.DataFrame:
        return self.to_arrow().to_pandas()
