"""The ingest driver: streams clips from decode actors into encode actors.

Continuous batching across videos: every encode actor keeps up to ``batch_videos`` videos
in flight; each encode step takes the next clip of every one of its videos that has one
ready, and a finished video's slot goes to the next video at once. Decoders stream clips
through Ray generators with backpressure, so memory stays bounded whatever a video's
length. Failures become ``VideoOutcome``s; the batch goes on.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import ray

from actors.decode import make_decode_actor
from actors.encode import make_encode_actor
from actors.runtime import gpus_available
from schemas.config import VMemConfig
from schemas.records import (
    Clip,
    DecodedChunk,
    MemoryRecord,
    StageError,
    VideoOutcome,
    VideoProbe,
    VideoTask,
)

OnVideo = Callable[[VideoOutcome, list[MemoryRecord]], None]
OnClips = Callable[[int], None]
MAX_STEPS_IN_FLIGHT = 2  # per encode actor: one running, one queued behind it


@dataclass
class _Video:
    """Driver-side state of one video being ingested."""

    task: VideoTask
    stream: ray.ObjectRefGenerator
    encoder: int
    pending: deque[Clip] = field(default_factory=deque)
    records: list[MemoryRecord] = field(default_factory=list)
    probe: VideoProbe | None = None
    error: StageError | None = None
    ended: bool = False
    in_flight: int = 0

    @property
    def finished(self) -> bool:
        drained = not self.pending or self.error is not None
        return self.ended and drained and self.in_flight == 0


class IngestPipeline:
    """Owns the decode and encode actors of one ingest run."""

    def __init__(self, cfg: VMemConfig, checkpoint: str):
        self.cfg = cfg
        use_gpu = gpus_available() >= 1
        n_enc, n_dec = cfg.encode.num_actors, cfg.encode.num_decoders
        slots = cfg.encode.batch_videos * n_enc
        decode_cls = make_decode_actor(num_cpus=0.5)
        self.decoders = [
            decode_cls.options(max_concurrency=math.ceil(slots / n_dec) + 1).remote(
                cfg.decode, cfg.storage.storage_options
            )
            for _ in range(n_dec)
        ]
        encode_cls = make_encode_actor(use_gpu)
        propagate = cfg.encode.propagate_memory
        self.encoders = [
            encode_cls.remote(checkpoint, propagate_memory=propagate) for _ in range(n_enc)
        ]
        ray.get([e.setup.remote() for e in self.encoders])

    def close(self) -> None:
        """Stop the actors now (their CPUs/GPUs go back to the cluster)."""
        for actor in [*self.decoders, *self.encoders]:
            ray.kill(actor)
        self.decoders, self.encoders = [], []

    def __enter__(self) -> IngestPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, tasks: Iterable[VideoTask], on_video: OnVideo, on_clips: OnClips | None = None):
        """Ingest ``tasks``; call ``on_video`` once per video as soon as it is complete."""
        _Run(self, deque(tasks), on_video, on_clips or (lambda n: None)).loop()


class _Run:
    """One pass of the scheduling loop over a queue of videos."""

    def __init__(self, pipe: IngestPipeline, queue: deque, on_video: OnVideo, on_clips: OnClips):
        self.pipe, self.queue, self.on_video, self.on_clips = pipe, queue, on_video, on_clips
        self.active: dict[str, _Video] = {}
        self.steps: dict[ray.ObjectRef, tuple[int, list[str]]] = {}
        self.started = 0

    def loop(self) -> None:
        while self.queue or self.active:
            self._admit()
            progressed = self._pull_chunks() + self._collect_steps() + self._submit_steps()
            self._finish_videos()
            if not progressed:
                self._wait_for_anything()

    def _admit(self) -> None:
        """Give free encoder slots to queued videos and start their decode streams."""
        per_encoder = [0] * len(self.pipe.encoders)
        for video in self.active.values():
            per_encoder[video.encoder] += 1
        limit = self.pipe.cfg.encode.batch_videos
        while self.queue and min(per_encoder) < limit:
            task = self.queue.popleft()
            if task.video_id in self.active:  # the same object listed twice
                continue
            encoder = per_encoder.index(min(per_encoder))
            decoder = self.pipe.decoders[self.started % len(self.pipe.decoders)]
            stream = decoder.stream.options(_generator_backpressure_num_objects=2).remote(task)
            self.active[task.video_id] = _Video(task, stream, encoder)
            per_encoder[encoder] += 1
            self.started += 1

    def _pull_chunks(self) -> int:
        """Take every decoded chunk that is ready, without blocking."""
        wanted = {
            v.stream: v
            for v in self.active.values()
            if not v.ended and v.error is None and len(v.pending) < self.pipe.cfg.decode.chunk_clips
        }
        if not wanted:
            return 0
        ready, _ = ray.wait(list(wanted), num_returns=len(wanted), timeout=0)
        for stream in ready:
            self._take_chunk(wanted[stream])
        return len(ready)

    def _take_chunk(self, video: _Video) -> None:
        try:
            chunk: DecodedChunk = ray.get(next(video.stream))
        except StopIteration:
            video.ended = True
            if video.error is None:
                video.error = StageError("decode", f"{video.task.uri}: decode stream ended early")
            return
        except ray.exceptions.RayError as exc:
            video.ended = True
            video.error = StageError("decode", f"{video.task.uri}: decode actor failed: {exc}")
            return
        video.pending.extend(chunk.clips)
        video.probe = chunk.probe or video.probe
        video.error = chunk.error
        video.ended = chunk.last or chunk.error is not None

    def _submit_steps(self) -> int:
        """Send each encoder the next clip of each of its videos that has one ready."""
        submitted = 0
        for index, encoder in enumerate(self.pipe.encoders):
            in_flight = sum(1 for enc, _ in self.steps.values() if enc == index)
            if in_flight >= MAX_STEPS_IN_FLIGHT:
                continue
            mine = [v for v in self.active.values() if v.encoder == index and v.error is None]
            ready = [v for v in mine if v.pending]
            waiting_for_more = len(ready) < len([v for v in mine if v.pending or not v.ended])
            if not ready or (in_flight and waiting_for_more):
                continue
            clips = [v.pending.popleft() for v in ready]
            for video in ready:
                video.in_flight += 1
            ref = encoder.encode_step.remote(clips)
            self.steps[ref] = (index, [c.video_id for c in clips])
            submitted += 1
        return submitted

    def _collect_steps(self) -> int:
        """Hand the memories of finished encode steps back to their videos."""
        if not self.steps:
            return 0
        ready, _ = ray.wait(list(self.steps), num_returns=len(self.steps), timeout=0)
        for ref in ready:
            _, video_ids = self.steps.pop(ref)
            try:
                records = ray.get(ref)
            except ray.exceptions.RayError as exc:
                records = []
                for video_id in video_ids:
                    self.active[video_id].error = StageError("encode", str(exc)[:500])
            for video_id in video_ids:
                self.active[video_id].in_flight -= 1
            for record in records:
                self.active[record.video_id].records.append(record)
            self.on_clips(len(records))
        return len(ready)

    def _finish_videos(self) -> None:
        """Report complete videos and free their slots (and the encoder's carried memory)."""
        done = [v for v in self.active.values() if v.finished]
        for video in done:
            del self.active[video.task.video_id]
            encoder = self.pipe.encoders[video.encoder]
            encoder.release.remote([video.task.video_id])
            self.on_video(self._outcome(video), video.records if video.error is None else [])

    @staticmethod
    def _outcome(video: _Video) -> VideoOutcome:
        if video.error is not None:
            return VideoOutcome(video.task, "failed", probe=video.probe, error=video.error)
        records = sorted(video.records, key=lambda r: r.clip_index)
        video.records[:] = records
        return VideoOutcome(video.task, "done", n_clips=len(records), probe=video.probe)

    def _wait_for_anything(self) -> None:
        streams = [v.stream for v in self.active.values() if not v.ended and v.error is None]
        waitables = streams + list(self.steps)
        if waitables:
            ray.wait(waitables, num_returns=1, timeout=1.0)
