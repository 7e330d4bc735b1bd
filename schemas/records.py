"""Typed records that travel between stages. A failure is data on the record, never a raise
across a batch: one bad video or question does not stop the others."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True)
class StageError:
    """Why one item failed: ``kind`` is a short machine tag, ``message`` names the problem."""

    kind: str  # e.g. "open", "decode", "not_video", "missing", "listing", "encode"
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


def video_id_for(uri: str) -> str:
    """Stable id of a video: a hash of its URI (the same object always maps to one id)."""
    return hashlib.sha1(uri.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class VideoTask:
    """One video to ingest, as listed from the archive."""

    uri: str  # local path or s3://bucket/key
    size: int
    etag: str  # S3 ETag, or "<mtime_ns>" for local files
    archive: str = ""  # the SOURCE it was listed from
    modified_at: datetime | None = None
    tags: tuple[str, ...] = ()  # folder names between the source root and the file
    video_id: str = ""
    # why the listing could not read this entry (a dangling link, a symlink loop, no read
    # permission); such an entry is recorded ``failed`` with this reason, never decoded. An
    # entry for a folder (its videos could not be listed) has a uri ending in "/".
    problem: str = ""

    def __post_init__(self) -> None:
        if not self.video_id:
            object.__setattr__(self, "video_id", video_id_for(self.uri))


@dataclass(frozen=True)
class VideoProbe:
    """Container facts read when a video is opened."""

    duration_s: float
    fps: float
    width: int
    height: int
    codec: str


@dataclass
class Clip:
    """T sampled frames of one video: clip ``clip_index`` covers [t_start, t_end) seconds."""

    video_id: str
    clip_index: int
    t_start: float
    t_end: float
    frames: np.ndarray  # (T, H, W, 3) uint8; a short last clip is padded with its last frame
    n_frames: int  # real (unpadded) frames
    thumbnail: bytes | None = None  # a small JPEG of its middle frame (decode.thumbnails)


@dataclass
class DecodedChunk:
    """What a decoder yields while streaming through a video: a few clips at a time.

    The last chunk of a video has ``last=True``; on failure it carries ``error`` (clips
    already yielded stay valid but the video is recorded as failed)."""

    video_id: str
    clips: list[Clip] = field(default_factory=list)
    probe: VideoProbe | None = None  # set on the first chunk
    last: bool = False
    error: StageError | None = None


@dataclass
class MemoryRecord:
    """The encoder's output for one clip."""

    video_id: str
    clip_index: int
    t_start: float
    t_end: float
    archive_key: np.ndarray  # (key width,) float32 unit: the clip's ANN key (archive stage)
    memory: np.ndarray  # (M, D) float32; quantised to int8 + per-token scale when stored
    thumbnail: bytes | None = None  # the clip's JPEG, carried to the thumbnails table


@dataclass
class VideoOutcome:
    """How ingesting one video ended; becomes its catalog row."""

    task: VideoTask
    status: str  # "done" | "failed"
    n_clips: int = 0
    probe: VideoProbe | None = None
    error: StageError | None = None


class Question(BaseModel):
    """One line of a question batch file (JSONL)."""

    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1)
    id: str | None = None
    where: str | None = None  # SQL predicate over memories columns (pre-filter)
    k: int | None = Field(None, ge=1)


@dataclass
class SelectedClip:
    """One selected memory: where it is and how well it fits the question."""

    video_id: str
    uri: str
    clip_index: int
    t_start: float
    t_end: float
    score: float
    memory: np.ndarray | None = None  # (M, D) float32 tokens for the answering model

    def as_row(self) -> dict:
        """The clip as a plain row (no memory tokens), for tables, JSON and Parquet."""
        return {
            "video_id": self.video_id,
            "uri": self.uri,
            "clip_index": self.clip_index,
            "t_start": self.t_start,
            "t_end": self.t_end,
            "score": self.score,
        }


@dataclass
class QueryResult:
    """The selection for one question: clips grouped per video, in time order per video."""

    question: str
    question_id: str | None = None
    clips: list[SelectedClip] = field(default_factory=list)
    error: StageError | None = None
    answer: str | None = None  # generated from the best video's K x M memories, if asked


class IngestReport(BaseModel):
    """Summary of one ingest run (printed by the CLI, published as a Prefect artifact)."""

    source: str
    db: str
    encoder: str
    done: int = 0
    failed: int = 0  # videos that newly failed in this run (tried now, and failed)
    skipped: int = 0  # videos done before and unchanged since
    failed_before: int = 0  # videos that failed before and are unchanged: not tried again
    clips: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    commits: int = 0
    failures: list[tuple[str, str]] = Field(default_factory=list)  # (uri, error), new
    earlier_failures: list[tuple[str, str]] = Field(default_factory=list)  # failed before
    # videos gone from the source since the last run: catalog rows marked ``deleted`` and
    # their memories pruned by this run
    deleted: int = 0
    deleted_uris: list[str] = Field(default_factory=list)
    version_tag: str | None = None  # the tag on the table versions this run produced

    @property
    def video_hours(self) -> float:
        return self.video_seconds / 3600.0

    def counts_line(self) -> str:
        """The run's counts on one line (logs, the Failed state's message)."""
        return (
            f"{self.done} done, {self.failed} newly failed, {self.skipped} unchanged, "
            f"{self.failed_before} failed before (unchanged)"
        )

    @property
    def video_hours_per_hour(self) -> float:
        return self.video_seconds / self.wall_seconds if self.wall_seconds > 0 else 0.0


class AnswerReport(BaseModel):
    """Summary of one bulk question batch; its counts are those of the rows' ``status``."""

    questions: int = 0
    answered: int = 0  # questions with selected clips (rows with status "answered")
    no_match: int = 0  # questions that ran but matched no memory (one "no_match" row each)
    failed: int = 0  # questions that could not run (one "failed" row each, with its error)
    failed_ids: list[str] = Field(default_factory=list)  # question_id of each failed one
    rows: int = 0
    output: str = ""
    wall_seconds: float = 0.0
