"""The decode stage: one video in, a stream of DecodedChunks (clips of sampled frames) out.

``DecodeStage`` is a plain class (unit tests run it without Ray); ``make_decode_actor``
wraps it as a Ray actor whose ``stream`` is a streaming generator with backpressure, so a
slow encoder bounds how far a fast decoder runs ahead. Every failure (missing object,
unreadable file, no video stream, decode error, truncation, nothing decoded) ends the
stream with one final chunk carrying a StageError: a bad video never raises across a batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from decode.sampling import (
    SampleStats,
    VideoError,
    displayed,
    open_container,
    probe,
    sample_frames,
)
from decode.thumbnails import ThumbnailPlan, encode_jpeg
from schemas.config import DecodeConfig
from schemas.records import Clip, DecodedChunk, StageError, VideoProbe, VideoTask
from storage.archive import ArchiveError, open_video

BACKPRESSURE_CHUNKS = 2  # chunks a decode actor may run ahead of its consumer


class DecodeStage:
    """Streams the clips of one video at a time; holds at most ``chunk_clips + 1`` clips."""

    def __init__(self, decode_cfg: DecodeConfig, storage_options: dict | None = None) -> None:
        self.cfg = decode_cfg
        self.storage_options = dict(storage_options or {})

    def stream(self, task: VideoTask) -> Iterator[DecodedChunk]:
        """Yield the chunks of ``task``; the last has ``last=True`` (and ``error`` on failure)."""
        if task.problem:  # the listing could not read it: fail it with that reason, unopened
            yield DecodedChunk(task.video_id, last=True, error=StageError("listing", task.problem))
            return
        probed: VideoProbe | None = None
        sent = False  # the probe goes on the first chunk
        try:
            with self._open(task.uri) as container:
                probed = probe(container, task.uri)
                for chunk in self._chunks(task, container, probed):
                    sent = True
                    yield chunk
        except Exception as exc:  # every failure becomes data
            error = _stage_error(exc, task.uri, opened=probed is not None)
            yield DecodedChunk(
                task.video_id, probe=None if sent else probed, last=True, error=error
            )

    @contextlib.contextmanager
    def _open(self, uri: str) -> Iterator[Any]:
        """The container of ``uri`` (a path, or a ranged-GET stream for s3://), then close both."""
        source = open_video(uri, self.storage_options)
        try:
            with open_container(source, uri) as container:
                yield container
        finally:
            if hasattr(source, "close"):
                source.close()

    def _chunks(
        self, task: VideoTask, container: Any, probed: VideoProbe
    ) -> Iterator[DecodedChunk]:
        cfg, first = self.cfg, True
        stats = SampleStats()  # its rotation is known once the first frame is decoded
        thumbs = ThumbnailPlan(every=cfg.clip_frames, at=cfg.clip_frames // 2)
        frames = sample_frames(
            container, cfg.sample_fps, cfg.frame_size, cfg.sampling, stats, task.uri, thumbs
        )
        clips: list[Clip] = []
        made = (
            _with_thumbnail(clip, thumbs, cfg.clip_frames)
            for clip in self._clips(task.video_id, frames, probed.duration_s)
        )
        for clip, is_last in _with_last(made):
            clips.append(clip)
            if is_last or len(clips) == cfg.chunk_clips:
                shown = displayed(probed, stats.rotation) if first else None  # catalog: as seen
                yield DecodedChunk(task.video_id, clips, shown, last=is_last)
                first, clips = False, []
        if first:  # the sampler raises "empty" itself; this guards a silent empty stream
            raise VideoError("empty", f"{task.uri}: no frame could be decoded")

    def _clips(
        self, video_id: str, frames: Iterable[tuple[float, np.ndarray]], duration: float
    ) -> Iterator[Clip]:
        """Group sampled frames into clips of ``clip_frames``; pad the short last one."""
        size, step = self.cfg.clip_frames, 1.0 / self.cfg.sample_fps
        times: list[float] = []
        images: list[np.ndarray] = []
        index = 0
        for t, image in frames:
            times.append(t)
            images.append(image)
            if len(images) == size:
                yield make_clip(video_id, index, times, images, size, step, duration)
                index, times, images = index + 1, [], []
        if images:
            yield make_clip(video_id, index, times, images, size, step, duration)


def make_clip(
    video_id: str,
    index: int,
    times: list[float],
    images: list[np.ndarray],
    size: int,
    step: float,
    duration: float,
) -> Clip:
    """A Clip of ``size`` frames: [first time, last time + step) clamped to the duration."""
    n = len(images)
    frames = np.stack(images + [images[-1]] * (size - n))  # (T, H, W, 3) uint8
    t_end = times[-1] + step
    if duration > times[-1]:
        t_end = min(duration, t_end)
    return Clip(video_id, index, float(times[0]), float(t_end), frames, n)


def _with_thumbnail(clip: Clip, thumbs: ThumbnailPlan, clip_frames: int) -> Clip:
    """The clip with its thumbnail: the one the sampler made from its middle frame at full
    size, or (a short last clip, or a frame the decoder never returned) a JPEG of its
    middle sampled frame at the model's size."""
    k = clip.clip_index * clip_frames + thumbs.at
    clip.thumbnail = thumbs.made.pop(k, None)
    for done in [i for i in thumbs.made if i < k]:  # a plan entry no clip took
        del thumbs.made[done]
    if clip.thumbnail is None:
        clip.thumbnail = encode_jpeg(clip.frames[(clip.n_frames - 1) // 2])
    return clip


def _with_last(items: Iterable[Any]) -> Iterator[tuple[Any, bool]]:
    """Each item with a flag telling whether it is the last (one item of lookahead)."""
    it = iter(items)
    try:
        current = next(it)
    except StopIteration:
        return
    for following in it:
        yield current, False
        current = following
    yield current, True


def _stage_error(exc: Exception, uri: str, opened: bool) -> StageError:
    """The StageError of a failure; its message always names the video."""
    if isinstance(exc, VideoError):
        kind, message = exc.kind, exc.message
    elif isinstance(exc, ArchiveError | FileNotFoundError):
        kind, message = "missing", str(exc)
    else:
        kind, message = "decode" if opened else "open", f"{type(exc).__name__}: {exc}"
    if uri not in message:
        message = f"{uri}: {message}"
    return StageError(kind, message)


def make_decode_actor(
    num_cpus: float = 0.5, backpressure: int = BACKPRESSURE_CHUNKS, max_restarts: int = 0
):
    """The Ray actor class of DecodeStage; ``stream`` is a streaming generator method.

    Ray pauses the generator once ``backpressure`` chunks are produced but not consumed,
    so memory per video stream is bounded by the consumer, not by the decoder's speed.
    Ray restarts a lost actor up to ``max_restarts`` times and replays a stream the loss
    cut on the new one, from the start, skipping the chunks already taken (decoding is
    deterministic). Past those retries the stream fails and the driver starts that video
    again from clip 0."""
    import ray

    class DecodeActor(DecodeStage):
        @ray.method(num_returns="streaming", _generator_backpressure_num_objects=backpressure)
        def stream(self, task: VideoTask) -> Iterator[DecodedChunk]:
            yield from super().stream(task)

    DecodeActor.__name__ = DecodeActor.__qualname__ = "DecodeActor"
    retries = {"max_restarts": max_restarts, "max_task_retries": max_restarts}
    return ray.remote(num_cpus=num_cpus, **retries)(DecodeActor)
