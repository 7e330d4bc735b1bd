"""What goes over the wire: request and response bodies (their JSON Schema is the
OpenAPI document's) and how stored rows become them.

Clients never see the server's file system: a video on object storage is named by its
``s3://`` URI, a video on the server's disk by its file name; catalog errors have those
paths replaced too (in ``/v1/sql`` rows as well). ETags and local archive roots are not
shown.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import SelectedClip
from service.errors import public_message
from storage.uri import is_s3

MAX_QUESTION_CHARS = 2_000
MAX_TOKEN_CHARS = 200
THUMBNAIL_URL = "/v1/clips/{video_id}/{clip_index}/thumbnail.jpg"
SEGMENT_URL = "/v1/clips/{video_id}/{clip_index}/segment.mp4"
VideoStatus = Literal["done", "failed", "deleted"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchRequest(_Request):
    question: str = Field(min_length=1, max_length=MAX_QUESTION_CHARS, pattern=r"\S")
    where: str | None = Field(
        None, min_length=1, description="SQL predicate over memories columns (pre-filter)"
    )
    k: int | None = Field(None, ge=1, description="clips per video (at most service.max_k)")
    answer: bool = Field(False, description="also generate the answer (needs a trained model)")
    page_token: str | None = Field(None, max_length=MAX_TOKEN_CHARS)


class SqlRequest(_Request):
    query: str = Field(min_length=1, description="one SELECT over memories or videos")
    page_token: str | None = Field(None, max_length=MAX_TOKEN_CHARS)


class ClipOut(BaseModel):
    clip_index: int
    t_start: float
    t_end: float
    score: float
    thumbnail_url: str
    segment_url: str = Field(description="the clip's time range of its video, as MP4")


class VideoHit(BaseModel):
    video_id: str
    name: str = Field(description="the video's file name")
    uri: str = Field(description="its s3:// URI, or for a file on the server its file name")
    score: float = Field(description="the best clip's score")
    clips: list[ClipOut] = Field(
        default_factory=list, description="the selected clips, in time order"
    )


class SearchResponse(BaseModel):
    answer: str | None = Field(
        None, description="generated from the best video's clips, once per question"
    )
    videos: list[VideoHit] = Field(description="best-fitting video first")
    next_page_token: str | None = None


class SqlResponse(BaseModel):
    columns: list[str]
    rows: list[dict]
    next_page_token: str | None = None


class VideoOut(BaseModel):
    video_id: str
    name: str
    uri: str
    status: str
    error: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    size: int | None = None
    n_clips: int | None = None
    encoder: str | None = None
    tags: list[str] | None = None
    recorded_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class VideoList(BaseModel):
    videos: list[VideoOut]
    next_page_token: str | None = None


class Health(BaseModel):
    status: Literal["ok"]
    encoder: str


# the catalog columns a VideoOut is made of (besides uri and archive, read to hide them)
VIDEO_COLUMNS = [f for f in VideoOut.model_fields if f not in ("name", "uri")] + ["uri", "archive"]


def public_uri(uri: str) -> str:
    """An s3:// URI as it is; a path on the server: its file name."""
    return uri if is_s3(uri) else PurePosixPath(uri).name


def video_out(row: dict) -> VideoOut:
    """A catalog row as clients see it."""
    uri, archive = row.get("uri") or "", row.get("archive") or ""
    name = PurePosixPath(uri).name
    fields = {k: v for k, v in row.items() if k in VideoOut.model_fields and k != "uri"}
    if fields.get("error"):
        hide = [] if is_s3(uri) else [archive]
        fields["error"] = public_message(fields["error"].replace(uri, name), hide)
    return VideoOut(**{**fields, "name": name, "uri": public_uri(uri)})


def public_row(row: dict) -> dict:
    """A row of ``/v1/sql`` with the same rules as the other endpoints: ``uri`` and
    ``archive`` in their public form, ``error`` without server paths, no ``etag``."""
    out = dict(row)
    uri = row.get("uri") or ""
    if "error" in out and out["error"]:
        hide = [] if is_s3(uri) else [row.get("archive") or ""]
        out["error"] = public_message(out["error"].replace(uri, PurePosixPath(uri).name), hide)
    for column in ("uri", "archive"):
        if out.get(column):
            out[column] = public_uri(out[column])
    if "etag" in out:
        out["etag"] = None
    return out


def video_hits(clips: list[SelectedClip]) -> list[VideoHit]:
    """Selected clips (grouped per video, best video first) as one hit per video."""
    hits: dict[str, VideoHit] = {}
    for clip in clips:
        hit = hits.get(clip.video_id)
        if hit is None:
            name = PurePosixPath(clip.uri).name
            hit = VideoHit(
                video_id=clip.video_id, name=name, uri=public_uri(clip.uri), score=clip.score
            )
            hits[clip.video_id] = hit
        hit.score = max(hit.score, clip.score)
        ids = {"video_id": clip.video_id, "clip_index": clip.clip_index}
        hit.clips.append(
            ClipOut(
                clip_index=clip.clip_index,
                t_start=clip.t_start,
                t_end=clip.t_end,
                score=clip.score,
                thumbnail_url=THUMBNAIL_URL.format(**ids),
                segment_url=SEGMENT_URL.format(**ids),
            )
        )
    return list(hits.values())
