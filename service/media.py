"""A clip's media: its thumbnail (made at ingest, in the ``thumbnails`` table) and its
segment, the clip's time range cut from the source video.

A segment is remuxed, not re-encoded: from the keyframe at or before the clip's start,
the video packets are copied up to its end into a fragmented MP4 in memory
(``frag_keyframe+empty_moov``: no seek back to write the index). Only a codec MP4 cannot
carry (rare: e.g. MPEG-2 from a .ts) is re-encoded, to H.264. The audio is left out.
A clip of a video that is not (or no longer) ``done`` in the catalog is a 404; a source
that is gone from the archive a 410; neither message names a server path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction

import av

from actors.query import QueryStage
from decode.sampling import VideoError, open_container, video_stream
from service.errors import ApiError
from storage.archive import ArchiveError, open_video
from storage.db import sql_literal
from storage.thumbnails import ThumbnailStore

MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
REENCODE_CODEC = "libx264"


@dataclass(frozen=True)
class ClipSpan:
    uri: str
    t_start: float
    t_end: float


class ClipMedia:
    """Thumbnails and segments of the clips of one query stage's database."""

    def __init__(self, stage: QueryStage) -> None:
        self.stage = stage
        self._thumbnails: ThumbnailStore | None = None

    def _visible(self, video_id: str, clip_index: int) -> None:
        done = self.stage.done
        if done is None or video_id not in done.ids():
            raise _no_clip(video_id, clip_index)

    def thumbnail(self, video_id: str, clip_index: int) -> bytes:
        self._visible(video_id, clip_index)
        if self._thumbnails is None:
            assert self.stage.store is not None
            self._thumbnails = ThumbnailStore(self.stage.store.db)
        jpeg = self._thumbnails.get(video_id, clip_index)
        if jpeg is None:
            raise ApiError(
                404,
                "thumbnail_not_found",
                f"no thumbnail of clip {clip_index} of video {video_id[:40]!r} (none such, "
                "or ingested before thumbnails were made)",
            )
        return jpeg

    def span(self, video_id: str, clip_index: int) -> ClipSpan:
        """The clip's source and time range (its memories row of any encoder)."""
        self._visible(video_id, clip_index)
        store = self.stage.store
        assert store is not None
        where = f"video_id = {sql_literal(video_id)} AND clip_index = {int(clip_index)}"
        rows = store.scan(where, ["uri", "t_start", "t_end"], limit=1).to_pylist()
        if not rows:
            raise _no_clip(video_id, clip_index)
        row = rows[0]
        return ClipSpan(row["uri"], float(row["t_start"]), float(row["t_end"]))

    def segment(self, video_id: str, clip_index: int) -> bytes:
        span = self.span(video_id, clip_index)
        options = self.stage.storage_cfg.storage_options
        try:
            source = open_video(span.uri, options)
        except ArchiveError as exc:
            if "not found" in str(exc):
                raise ApiError(
                    410,
                    "source_gone",
                    f"the source video of {video_id[:40]!r} is no longer in the archive",
                ) from exc
            raise ApiError(
                503, "source_unavailable", "the source video cannot be read now"
            ) from exc
        try:
            return cut_segment(source, span.t_start, span.t_end)
        except (VideoError, av.error.FFmpegError, OSError) as exc:
            raise ApiError(
                422,
                "segment_failed",
                f"the clip could not be cut from its source video ({type(exc).__name__})",
            ) from exc
        finally:
            if hasattr(source, "close"):
                source.close()


def _no_clip(video_id: str, clip_index: int) -> ApiError:
    return ApiError(
        404, "clip_not_found", f"no clip {clip_index} of a video with id {video_id[:40]!r}"
    )


def cut_segment(source, t_start: float, t_end: float) -> bytes:
    """MP4 bytes of ``source``'s first video stream from the keyframe at or before
    ``t_start`` to ``t_end`` (packets copied; timestamps start at 0)."""
    with open_container(source) as container:
        stream = video_stream(container)
        try:
            return _remux(container, stream, t_start, t_end)
        except (av.error.FFmpegError, ValueError):  # MP4 cannot hold this codec as it is
            return _reencode(container, stream, t_start, t_end)


def _packets(container, stream, t_start: float, t_end: float):
    """The stream's packets (decode order) from the keyframe at or before ``t_start``
    while their decode time is before ``t_end``."""
    tb = stream.time_base
    start = stream.start_time or 0
    container.seek(start + int(t_start / tb), stream=stream, backward=True, any_frame=False)
    end = start + int(t_end / tb)
    first = True
    for packet in container.demux(stream):
        if packet.dts is None or packet.size == 0:
            continue
        if first and not packet.is_keyframe:
            continue  # a seek may land just before the keyframe
        first = False
        if packet.dts >= end:
            break
        yield packet


def _remux(container, stream, t_start: float, t_end: float) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4", options=MP4_OPTIONS) as out:
        target = out.add_stream_from_template(stream)
        offset = None
        for packet in _packets(container, stream, t_start, t_end):
            offset = packet.dts if offset is None else offset
            packet.dts -= offset
            if packet.pts is not None:
                packet.pts -= offset
            packet.stream = target
            out.mux(packet)
        if offset is None:
            raise VideoError("empty", "no packet in the clip's time range")
    return buffer.getvalue()


def _reencode(container, stream, t_start: float, t_end: float) -> bytes:
    buffer = io.BytesIO()
    rate = stream.average_rate or Fraction(25)
    with av.open(buffer, "w", format="mp4", options=MP4_OPTIONS) as out:
        target = out.add_stream(REENCODE_CODEC, rate=rate)
        target.width, target.height = stream.codec_context.width, stream.codec_context.height
        target.pix_fmt = "yuv420p"
        target.options = {"preset": "ultrafast"}
        n = 0
        for packet in _packets(container, stream, t_start, t_end):
            for frame in packet.decode():
                if frame.time is None or frame.time < t_start - 1e-3:
                    continue
                frame = frame.reformat(format="yuv420p")
                frame.pts, frame.time_base = n, 1 / rate
                n += 1
                out.mux(target.encode(frame))
        out.mux(target.encode(None))
        if n == 0:
            raise VideoError("empty", "no frame in the clip's time range")
    return buffer.getvalue()
