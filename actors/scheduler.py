"""The ingest scheduler: continuous batching of many videos' clips, over any stage runner.

One video is sequential (clip t needs the memory of clip t-1), so throughput comes from
batching across videos: every encoder keeps up to ``batch_videos`` videos in flight; each
encode step takes the next clip of every one of its videos that has one ready, and a
finished video's slot goes to the next queued video at once. A video's next decoded chunk
is taken only once its previous chunk is all submitted, so the driver holds at most one
chunk (``decode.chunk_clips`` clips) per video; the runner bounds how far a decoder runs
ahead of that. Failures become ``VideoOutcome``s; the batch goes on.

A stage call that failed because its actor was lost (killed, crashed, its node gone; Ray
restarts it) is not the video's fault: the video starts again from clip 0, up to
``max_attempts`` tries in all. A lost encoder also lost the carried memory of every video
it held, so all of them start again; a stream whose decoder was lost for good starts its
video again. Records of an abandoned try are dropped, so nothing is reported twice.

The loop reaches the stages only through a ``StageRunner``: Ray actors in production
(actors.ray_runner), the same stage classes in this process for unit tests
(actors.local_runner).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

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
DecodeStream = Hashable  # a runner's handle on one video's stream of decoded chunks
EncodeStep = Hashable  # a runner's handle on one submitted encode step
MAX_STEPS_IN_FLIGHT = 2  # per encoder: one running, one queued behind it
WAIT_TIMEOUT_S = 1.0  # longest idle wait before the loop looks again
MAX_ATTEMPTS = 3  # tries of one video when actors are lost under it (schemas.config.RetryConfig)


class StageCallFailed(Exception):
    """A call into a stage failed in the runner (an actor died, a step raised); says why.

    ``actor_lost``: the actor went away (or came back without its state), so the call's
    videos are not at fault and may be tried again; otherwise the stage itself raised."""

    def __init__(self, message: str, actor_lost: bool = False) -> None:
        super().__init__(message)
        self.actor_lost = actor_lost


class StageRunner(Protocol):
    """What the scheduler needs from whatever runs the decode and encode stages.

    Nothing here blocks except ``wait_for_any``; handles are opaque to the scheduler."""

    @property
    def num_decoders(self) -> int: ...

    @property
    def num_encoders(self) -> int: ...

    def start_decode(self, decoder: int, task: VideoTask) -> DecodeStream:
        """Start streaming the decoded chunks of ``task`` on decoder number ``decoder``."""
        ...

    def ready_streams(self, streams: list[DecodeStream]) -> list[DecodeStream]:
        """Those of ``streams`` whose next chunk (or end) can be taken now."""
        ...

    def next_chunk(self, stream: DecodeStream) -> DecodedChunk | None:
        """The next chunk of a ready stream; None once it ended; StageCallFailed on a crash."""
        ...

    def cancel_decode(self, stream: DecodeStream) -> None:
        """Stop a stream that is no longer read (its video failed in encode)."""
        ...

    def submit_encode(self, encoder: int, clips: list[Clip]) -> EncodeStep:
        """Send one encode step (one clip of each of several videos) to encoder ``encoder``."""
        ...

    def finished_steps(self, steps: list[EncodeStep]) -> list[EncodeStep]:
        """Those of ``steps`` that have finished (their records or failure can be taken)."""
        ...

    def step_records(self, step: EncodeStep) -> list[MemoryRecord]:
        """The records of a finished step; StageCallFailed if it raised."""
        ...

    def release(self, encoder: int, video_ids: list[str]) -> None:
        """Let encoder ``encoder`` forget the carried memory of videos that are over."""
        ...

    def wait_for_any(
        self, streams: list[DecodeStream], steps: list[EncodeStep], timeout_s: float
    ) -> None:
        """Block until one of ``streams`` or ``steps`` is ready, or ``timeout_s`` passed."""
        ...


@dataclass
class _Video:
    """Driver-side state of one video being ingested."""

    task: VideoTask
    stream: DecodeStream
    encoder: int
    pending: deque[Clip] = field(default_factory=deque)  # taken from the stream, not yet sent
    records: list[MemoryRecord] = field(default_factory=list)
    probe: VideoProbe | None = None
    error: StageError | None = None
    ended: bool = False  # the stream gave its last chunk (or failed)
    in_flight: int = 0  # encode steps holding one of its clips
    lost: bool = False  # ``error`` came from a lost actor: start this video again

    @property
    def wants_chunk(self) -> bool:
        """Its stream should be read: it is healthy, not over, and every clip taken is sent."""
        return self.error is None and not self.ended and not self.pending

    @property
    def finished(self) -> bool:
        """Nothing more will come: every clip is encoded, or it failed and no step holds it."""
        if self.in_flight:
            return False
        return self.error is not None or (self.ended and not self.pending)


class IngestScheduler:
    """One ingest run: admit videos, read chunks, batch encode steps, report each video."""

    def __init__(
        self,
        runner: StageRunner,
        batch_videos: int,
        on_video: OnVideo,
        on_clips: OnClips | None = None,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        self.runner, self.batch_videos = runner, batch_videos
        self.on_video, self.on_clips = on_video, on_clips or (lambda n: None)
        self.max_attempts = max_attempts
        self.queue: deque[VideoTask] = deque()
        self.active: dict[str, _Video] = {}
        self.steps: dict[EncodeStep, tuple[int, list[str]]] = {}  # -> (encoder, video ids)
        self.admitted: set[str] = set()  # video ids of this run (each is reported once)
        self.attempts: Counter[str] = Counter()  # video id -> tries started
        self.starts = 0  # decode streams started (spreads them over the decoders)

    def run(self, tasks: Iterable[VideoTask]) -> None:
        """Ingest ``tasks``; call ``on_video`` once per video as soon as it is complete."""
        self.queue.extend(tasks)
        while self.queue or self.active:
            # freed slots are refilled before the next steps go out
            progressed = self._collect_steps() + self._finish_videos() + self._admit()
            progressed += self._take_chunks() + self._submit_steps()
            if not progressed:
                self._wait_for_anything()

    def _admit(self) -> int:
        """Give free encoder slots to queued videos and start their decode streams."""
        per_encoder = [0] * self.runner.num_encoders
        for video in self.active.values():
            per_encoder[video.encoder] += 1
        admitted = 0
        while self.queue and min(per_encoder) < self.batch_videos:
            task = self.queue.popleft()
            if task.video_id in self.admitted:  # the same object listed twice
                continue
            encoder = per_encoder.index(min(per_encoder))
            decoder = self.starts % self.runner.num_decoders
            stream = self.runner.start_decode(decoder, task)
            self.active[task.video_id] = _Video(task, stream, encoder)
            self.admitted.add(task.video_id)
            self.attempts[task.video_id] += 1
            self.starts += 1
            per_encoder[encoder] += 1
            admitted += 1
        return admitted

    def _take_chunks(self) -> int:
        """Take the next chunk of every video that wants one and has one ready."""
        wanting = {v.stream: v for v in self.active.values() if v.wants_chunk}
        if not wanting:
            return 0
        ready = self.runner.ready_streams(list(wanting))
        for stream in ready:
            self._take_chunk(wanting[stream])
        return len(ready)

    def _take_chunk(self, video: _Video) -> None:
        uri = video.task.uri
        try:
            chunk = self.runner.next_chunk(video.stream)
        except StageCallFailed as exc:
            video.ended, video.error = True, StageError("decode", f"{uri}: {exc}")
            video.lost = exc.actor_lost
            return
        if chunk is None:  # a stream always ends with a last chunk; this one did not
            video.ended, video.error = (
                True,
                StageError("decode", f"{uri}: decode stream ended early"),
            )
            return
        video.pending.extend(chunk.clips)
        video.probe = chunk.probe or video.probe
        video.error = chunk.error
        video.ended = chunk.last or chunk.error is not None

    def _submit_steps(self) -> int:
        """Send each encoder the next clip of each of its videos that has one ready.

        With a step already in flight, an encoder waits until every one of its videos has a
        clip ready (fuller batches); with none in flight it goes with what is ready."""
        in_flight = Counter(encoder for encoder, _ in self.steps.values())
        submitted = 0
        for encoder in range(self.runner.num_encoders):
            if in_flight[encoder] >= MAX_STEPS_IN_FLIGHT:
                continue
            mine = [v for v in self.active.values() if v.encoder == encoder and v.error is None]
            ready = [v for v in mine if v.pending]
            waiting_for_more = any(not v.pending and not v.ended for v in mine)
            if not ready or (in_flight[encoder] and waiting_for_more):
                continue
            clips = [v.pending.popleft() for v in ready]
            for video in ready:
                video.in_flight += 1
            step = self.runner.submit_encode(encoder, clips)
            self.steps[step] = (encoder, [clip.video_id for clip in clips])
            submitted += 1
        return submitted

    def _collect_steps(self) -> int:
        """Hand the records of finished encode steps to their videos; a step that raised
        fails exactly the videos it held, a lost encoder restarts every video it held."""
        if not self.steps:
            return 0
        finished = self.runner.finished_steps(list(self.steps))
        for step in finished:
            encoder, video_ids = self.steps.pop(step)
            try:
                records = self.runner.step_records(step)
            except StageCallFailed as exc:
                records = []
                if exc.actor_lost:  # every video on that encoder lost its carried memory
                    hit = [v.task.video_id for v in self._on_encoder(encoder)]
                else:
                    hit = video_ids
                for video_id in hit:
                    self._fail(self.active[video_id], "encode", str(exc)[:500], exc.actor_lost)
            for video_id in video_ids:
                self.active[video_id].in_flight -= 1
            for record in records:
                self.active[record.video_id].records.append(record)
            self.on_clips(len(records))
        return len(finished)

    def _finish_videos(self) -> int:
        """Report complete videos and free their slots (and the encoder's carried memory)."""
        done = [v for v in self.active.values() if v.finished]
        again: list[VideoTask] = []  # to start again from clip 0, first in line
        for video in done:
            del self.active[video.task.video_id]
            if not video.ended:  # failed in encode while its decoder still runs
                self.runner.cancel_decode(video.stream)
            self.runner.release(video.encoder, [video.task.video_id])
            if video.lost and self.attempts[video.task.video_id] < self.max_attempts:
                self.admitted.discard(video.task.video_id)
                again.append(video.task)
                continue
            if video.lost and video.error is not None:  # out of tries
                tries = self.attempts[video.task.video_id]
                message = f"{video.error.message} (actor lost on each of {tries} tries)"
                video.error = StageError(video.error.kind, message)
            self.on_video(*_outcome(video))
        self.queue.extendleft(reversed(again))
        return len(done)

    def _on_encoder(self, encoder: int) -> list[_Video]:
        return [v for v in self.active.values() if v.encoder == encoder]

    @staticmethod
    def _fail(video: _Video, stage: str, message: str, lost: bool) -> None:
        """Mark ``video`` failed (or to start again, when ``lost``); the first mark stands."""
        if video.error is None:
            video.error, video.lost = StageError(stage, message), lost

    def _wait_for_anything(self) -> None:
        streams = [v.stream for v in self.active.values() if v.wants_chunk]
        self.runner.wait_for_any(streams, list(self.steps), WAIT_TIMEOUT_S)


def _outcome(video: _Video) -> tuple[VideoOutcome, list[MemoryRecord]]:
    """How the video ended, and its records in clip order (none when it failed)."""
    if video.error is not None:
        return VideoOutcome(video.task, "failed", probe=video.probe, error=video.error), []
    records = sorted(video.records, key=lambda r: r.clip_index)
    return VideoOutcome(video.task, "done", n_clips=len(records), probe=video.probe), records
