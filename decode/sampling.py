"""Sparse frame sampling with PyAV: decode only what the sampled frames need (no Ray).

A video is read one GOP (keyframe to keyframe) at a time. Demuxing is cheap, so the packets
of a GOP are buffered (compressed, bounded by ``MAX_GOP_BYTES``) and the plan for that GOP
is made before anything is decoded:

- exact: sample k (time k / sample_fps) takes the first frame whose time is >= the target.
  Packets are fed in decode order only up to the last one that a target needs; the rest of
  the GOP is never decoded, and packets that no target needs are decoded with
  ``skip_frame="NONREF"`` (a non-reference frame is never needed by another frame, so that
  is always safe). A GOP with no target is not decoded at all.
- keyframe: sample k takes the keyframe nearest to its target time; only keyframe packets
  reach the decoder. Samples stay on the regular k / sample_fps grid, so a keyframe may
  serve several samples (repeat) and some keyframes serve none (skip).
- auto: per GOP, keyframe when that GOP is no longer than the sample interval (the keyframe
  is then at most half an interval off), else exact.

Only the chosen frames are converted, straight to RGB at the small target size, and turned
upright when the container's display matrix says the video is rotated. Still images posing
as video are refused. Errors are raised as ``VideoError`` with a ``kind`` that the decode
stage turns into data.
"""

from __future__ import annotations

import bisect
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import IO, Any

import av
import numpy as np
from av.container import InputContainer

from decode.thumbnails import ThumbnailPlan
from schemas.records import VideoProbe

EPS_S = 1e-3  # a frame this close before a target counts as being at the target
MAX_GOP_BYTES = 64 << 20  # compressed bytes buffered per GOP before decoding it in pieces
TRUNCATION_SLACK_S = 1.0  # packets may end this much (or 5%) before the duration
IMAGE_DEMUXERS = frozenset({"image2", "image2pipe"})  # besides the <format>_pipe ones
# streams that hold one picture: cover art, or a still image flagged by the container
STILL_DISPOSITION = av.stream.Disposition.attached_pic | av.stream.Disposition.still_image


class VideoError(Exception):
    """A video that cannot be sampled; ``kind`` is the StageError kind."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.message = kind, message


@dataclass
class SampleStats:
    """What a sampling run cost: filled in while the iterator runs."""

    packets_demuxed: int = 0
    packets_decoded: int = 0  # sent to the decoder
    frames_decoded: int = 0  # returned by the decoder
    frames_converted: int = 0  # resized + converted to RGB
    gops_exact: int = 0
    gops_keyframe: int = 0
    rotation: int = 0  # the display matrix's counter-clockwise degrees (frames turned upright)


@dataclass
class _Gop:
    """Buffered packets (decode order) of one GOP, or of a piece of a GOP over the cap."""

    packets: list[av.Packet] = field(default_factory=list)
    keyed: bool = False  # starts at a keyframe
    complete: bool = True  # False: the rest of this GOP follows in the next piece
    cut: bool = False  # a piece of a GOP over MAX_GOP_BYTES
    next_key_pts: int | None = None  # pts of the keyframe that ends it
    last: bool = False  # the final GOP of the stream


Source = str | os.PathLike | IO[bytes] | InputContainer


def source_name(source: Any) -> str:
    """A name for messages: the path, or the ``name`` of a file-like."""
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return str(getattr(source, "name", type(source).__name__))


def open_container(source: str | os.PathLike | IO[bytes], name: str | None = None):
    """av.open with errors as VideoError ("missing" or "open")."""
    name = name or source_name(source)
    target = os.fspath(source) if isinstance(source, os.PathLike) else source
    try:
        return av.open(target, mode="r")
    except FileNotFoundError as exc:
        raise VideoError("missing", f"{name}: file not found") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError("open", f"{name}: cannot open: {exc}") from exc


def video_stream(container: InputContainer, name: str | None = None) -> av.VideoStream:
    """The first video stream that moves: cover art (an attached picture) is skipped, and a
    still image posing as a video (a PNG named .mp4 opens as a 1-frame image stream) is
    refused as ``not_video``."""
    name = name or source_name(container.name)
    if not container.streams.video:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        raise VideoError("no_video_stream", f"{name}: no video stream (streams: {kinds})")
    image = still_image_kind(container)
    moving = [s for s in container.streams.video if not s.disposition & STILL_DISPOSITION]
    if image is None and not moving:
        image = f"{container.streams.video[0].codec_context.name} cover art"
    if image is not None:
        raise VideoError("not_video", f"not a video: {name} is a still image ({image})")
    return moving[0]


def still_image_kind(container: InputContainer) -> str | None:
    """The image format when FFmpeg opened the file with an image demuxer (``png_pipe``,
    ``jpeg_pipe``, ..., ``image2``), else None."""
    demuxer = container.format.name
    if demuxer in IMAGE_DEMUXERS:
        return container.streams.video[0].codec_context.name
    if demuxer.endswith("_pipe"):  # FFmpeg names every image-probing demuxer <format>_pipe
        return demuxer.removesuffix("_pipe")
    return None


def stream_duration(container: InputContainer, stream: av.VideoStream) -> float:
    """Seconds of video: the stream's own duration, else the container's; 0 when unknown."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else 0.0


def probe(container: InputContainer, name: str | None = None) -> VideoProbe:
    """Container facts of the first video stream (raises VideoError without one)."""
    stream = video_stream(container, name)
    rate = stream.average_rate or stream.guessed_rate or 0
    return VideoProbe(
        duration_s=stream_duration(container, stream),
        fps=float(rate),
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        codec=stream.codec_context.name,
    )


def quarter_turns(degrees: float) -> int:
    """Counter-clockwise quarter turns (0-3) nearest to a display rotation in degrees."""
    return round(degrees / 90) % 4


def upright(frame: av.VideoFrame, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` (converted from ``frame``, (S, S, 3)) turned as the frame's display matrix
    says (a phone video held upright is stored sideways with a 90 degree rotation). The
    frames are square, so turning after the resize equals turning before it. Mirror flips
    in the matrix are not applied."""
    turns = quarter_turns(display_rotation(frame))
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def display_rotation(frame: av.VideoFrame) -> int:
    """The frame's display-matrix rotation in counter-clockwise degrees (0: none, or a
    matrix that is not a rotation)."""
    try:
        return int(frame.rotation)
    except (ValueError, OverflowError):  # a degenerate matrix has no angle (NaN)
        return 0


def displayed(probed: VideoProbe, rotation: float) -> VideoProbe:
    """The probe with width and height as the video is displayed (swapped when its display
    matrix turns it a quarter)."""
    if quarter_turns(rotation) % 2:
        return replace(probed, width=probed.height, height=probed.width)
    return probed


def sample_frames(
    source: Source,
    sample_fps: float,
    frame_size: int,
    mode: str = "auto",
    stats: SampleStats | None = None,
    name: str | None = None,
    thumbnails: ThumbnailPlan | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (t seconds, (frame_size, frame_size, 3) uint8) for t = k / sample_fps < duration.

    ``source`` is a path, a seekable binary file-like, or an open container (left open).
    With ``thumbnails``, the samples it wants also get a JPEG thumbnail made from the
    full-size decoded frame (in ``thumbnails.made``, by sample index), before they are
    yielded.
    """
    if mode not in ("auto", "exact", "keyframe"):
        raise ValueError(f"unknown sampling mode {mode!r}")
    args = (sample_fps, frame_size, mode, stats, name, thumbnails)
    if isinstance(source, InputContainer):
        yield from _Sampler(source, *args).run()
        return
    with open_container(source, name) as container:
        yield from _Sampler(container, *args).run()


class _Sampler:
    """The state of one sampling run: target grid, buffered GOP, frames awaited."""

    def __init__(self, container, sample_fps, frame_size, mode, stats, name, thumbs) -> None:
        self.thumbs: ThumbnailPlan | None = thumbs
        self.name = name or source_name(container.name)
        self.container, self.stream = container, video_stream(container, self.name)
        self.codec = self.stream.codec_context
        self.fps, self.size, self.mode = sample_fps, frame_size, mode
        self.stats = stats if stats is not None else SampleStats()
        self.tb = float(self.stream.time_base)
        self.start = self.stream.start_time or 0
        self.duration = stream_duration(container, self.stream)
        self.k = 0  # index of the next target to plan
        self.carry: list[float] = []  # targets waiting for the next keyframe
        self.awaited: deque[tuple[int, list[float]]] = deque()  # (pts, targets), pts order
        self.demux_end = 0.0  # end time of the packets demuxed so far
        self.eof = False  # every packet has been demuxed
        self.last_rgb: np.ndarray | None = None
        self.yielded = 0

    def time(self, pts: int) -> float:
        return (pts - self.start) * self.tb

    def run(self) -> Iterator[tuple[float, np.ndarray]]:
        try:
            for gop in self._gops():
                yield from self._sample_gop(gop)
        except (av.error.FFmpegError, OSError) as exc:
            at = self.k / self.fps
            message = f"{self.name}: decoding failed near {at:.1f} s: {exc}"
            raise VideoError("decode", message) from exc
        for _, targets in self.awaited:  # frames the decoder never returned: hold the last
            yield from self._emit(targets, self.last_rgb)
        if self._truncated():
            raise VideoError(
                "truncated",
                f"{self.name}: truncated: decoded {self.demux_end:.1f} s of {self.duration:.1f} s",
            )
        if not self.yielded:
            raise VideoError("empty", f"{self.name}: no frame could be decoded")

    def _truncated(self) -> bool:
        slack = max(TRUNCATION_SLACK_S, 0.05 * self.duration)
        return self.duration > 0 and self.duration - self.demux_end > slack

    def _gops(self) -> Iterator[_Gop]:
        """Group demuxed packets by GOP; keyframe mode keeps only the keyframes."""
        keep_all = self.mode != "keyframe"
        gop, size = _Gop(), 0
        for packet in self.container.demux(self.stream):
            if packet.pts is None or packet.size == 0:
                continue  # the flush packet at the end, or a packet without a time
            self.stats.packets_demuxed += 1
            span = packet.duration or 0
            self.demux_end = max(self.demux_end, self.time(packet.pts + span))
            if packet.is_keyframe and gop.packets:
                gop.next_key_pts = packet.pts
                yield gop
                gop, size = _Gop(), 0
            elif packet.is_keyframe:
                gop.cut = False
            if not gop.packets:
                gop.keyed = packet.is_keyframe
            if keep_all or packet.is_keyframe:
                gop.packets.append(packet)
                size += packet.size
            if size > MAX_GOP_BYTES:
                gop.complete, gop.cut = False, True
                yield gop
                gop, size = _Gop(cut=True), 0
        gop.last = self.eof = True
        yield gop

    def _sample_gop(self, gop: _Gop) -> Iterator[tuple[float, np.ndarray]]:
        if not gop.packets:
            return
        if gop.keyed and (self.mode == "keyframe" or self._short_gop(gop)):
            wanted = self._plan_keyframe(gop)
            feed, decode_all = (gop.packets[:1] if wanted else []), False
            self.stats.gops_keyframe += 1
        elif gop.cut:  # over the cap: decode it whole, like a plain decoder
            wanted, feed, decode_all = self._plan_cut(gop), gop.packets, True
            self.stats.gops_exact += 1
        else:
            wanted = self._plan_exact(gop)
            last = max((i for i, p in enumerate(gop.packets) if p.pts in wanted), default=-1)
            feed, decode_all = gop.packets[: last + 1], False
            self.stats.gops_exact += 1
        self.awaited.extend(sorted(wanted.items()))
        for packet in feed:
            needed = decode_all or packet.pts in wanted
            self.codec.skip_frame = "DEFAULT" if needed else "NONREF"
            self.stats.packets_decoded += 1
            yield from self._receive(self.codec.decode(packet))
        if feed and gop.complete:  # drain the reorder delay, then start clean at the keyframe
            yield from self._receive(self.codec.decode(None))
            self.codec.flush_buffers()

    def _short_gop(self, gop: _Gop) -> bool:
        """Auto mode: is this GOP no longer than the sample interval?"""
        if self.mode != "auto" or not gop.complete:
            return False
        end = self.time(gop.next_key_pts) if gop.next_key_pts is not None else self.demux_end
        return end - self.time(gop.packets[0].pts) <= 1 / self.fps + EPS_S

    def _limit(self) -> float:
        """Targets are planned while t < this: the duration, or where the packets end."""
        if self.duration > 0 and not (self.eof and self._truncated()):
            return self.duration
        return self.demux_end if self.eof else math.inf

    def _plan_exact(self, gop: _Gop) -> dict[int, list[float]]:
        """pts -> targets: the first frame at or after each target inside this GOP."""
        pts = sorted(p.pts for p in gop.packets)
        times = [self.time(p) for p in pts]
        wanted: dict[int, list[float]] = {}
        if self.carry:
            wanted[pts[0]] = self.carry
            self.carry = []
        horizon = self._limit() if gop.last else times[-1] + EPS_S
        while (t := self.k / self.fps) < self._limit() and t <= horizon:
            i = min(bisect.bisect_left(times, t - EPS_S), len(pts) - 1)
            wanted.setdefault(pts[i], []).append(t)
            self.k += 1
        return wanted

    def _plan_cut(self, gop: _Gop) -> dict[int, list[float]]:
        """pts thresholds -> targets, for a GOP decoded whole in pieces.

        Frames of a later piece may come before this one's in display order (B-frames), so
        each target awaits the first *decoded* frame at or after its time."""
        top = max(p.pts for p in gop.packets)
        wanted: dict[int, list[float]] = {}
        if self.carry:
            wanted[gop.packets[0].pts] = self.carry
            self.carry = []
        horizon = self._limit() if gop.last else self.time(top) + EPS_S
        while (t := self.k / self.fps) < self._limit() and t <= horizon:
            threshold = self.start + math.ceil((t - EPS_S) / self.tb)
            wanted.setdefault(min(top, threshold), []).append(t)
            self.k += 1
        return wanted

    def _plan_keyframe(self, gop: _Gop) -> dict[int, list[float]]:
        """pts -> targets: this keyframe takes the targets nearer to it than to the next."""
        key = gop.packets[0].pts
        key_t = self.time(key)
        next_t = None if gop.next_key_pts is None else self.time(gop.next_key_pts)
        mine, self.carry = self.carry, []
        while (t := self.k / self.fps) < self._limit() and (next_t is None or t < next_t):
            if next_t is None or t - key_t <= next_t - t:
                mine.append(t)
            else:
                self.carry.append(t)
            self.k += 1
        return {key: mine} if mine else {}

    def _receive(self, frames: list[av.VideoFrame]) -> Iterator[tuple[float, np.ndarray]]:
        """Hand each decoded frame to the targets awaiting it (first frame at/after their pts)."""
        for frame in frames:
            self.stats.frames_decoded += 1
            if frame.pts is None or not self.awaited or frame.pts < self.awaited[0][0]:
                continue
            rgb = upright(
                frame, frame.to_ndarray(width=self.size, height=self.size, format="rgb24")
            )
            self.stats.rotation = display_rotation(frame)
            self.stats.frames_converted += 1
            while self.awaited and self.awaited[0][0] <= frame.pts:
                targets = self.awaited.popleft()[1]
                self._thumbnail(frame, targets)
                yield from self._emit(targets, rgb)

    def _thumbnail(self, frame: av.VideoFrame, targets: list[float]) -> None:
        """A JPEG of the full-size ``frame`` for the targets the plan wants (upright)."""
        plan = self.thumbs
        if plan is None:
            return
        wanted = [k for k in (round(t * self.fps) for t in targets) if plan.wants(k)]
        if not wanted:
            return
        jpeg = plan.make(frame, quarter_turns(display_rotation(frame)))
        for k in wanted:
            plan.made[k] = jpeg

    def _emit(self, targets: list[float], rgb: np.ndarray | None):
        if rgb is None:
            return
        self.last_rgb = rgb
        for t in targets:
            self.yielded += 1
            yield t, rgb
