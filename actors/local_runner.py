"""A stage runner without Ray: the same stage classes, called one at a time in this process.

For unit tests and debugging of the scheduler. A decoder runs ahead of its consumer by at
most ``chunks_ahead`` chunks (what Ray's generator backpressure does for the actors); an
encode step runs when it is submitted, so steps finish in submission order. Nothing is
ever in flight when the scheduler would wait, so ``wait_for_any`` means a scheduling bug.
A stage that raises ``StageLost`` stands for a lost actor (as does the encoder's own
``CarriedMemoryLost``): the call fails with ``actor_lost`` as a dead Ray actor's would.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from actors.decode import BACKPRESSURE_CHUNKS, DecodeStage
from actors.encode import CarriedMemoryLost, EncodeStage
from actors.scheduler import StageCallFailed
from schemas.config import VMemConfig
from schemas.records import Clip, DecodedChunk, MemoryRecord, VideoTask


class StageLost(RuntimeError):
    """Raised by a stage run in process to stand for its actor dying (fakes in tests)."""


LOST = (StageLost, CarriedMemoryLost)


class VideoDecoder(Protocol):
    """The decode stage's shape (DecodeStage, or a fake in tests)."""

    def stream(self, task: VideoTask) -> Iterator[DecodedChunk]: ...


class ClipEncoder(Protocol):
    """The encode stage's shape (EncodeStage, or a fake in tests)."""

    def encode_step(self, clips: list[Clip]) -> list[MemoryRecord]: ...

    def release(self, video_ids: list[str]) -> None: ...


@dataclass(eq=False)  # compared and hashed by identity: it is a handle
class LocalStream:
    """One video's decode generator and the chunks it produced ahead of the consumer."""

    chunks: Iterator[DecodedChunk]
    produced: deque[DecodedChunk] = field(default_factory=deque)
    exhausted: bool = False
    failure: Exception | None = None


@dataclass(eq=False)
class LocalStep:
    """A finished encode step: its records, or what it raised."""

    records: list[MemoryRecord] = field(default_factory=list)
    failure: Exception | None = None


class LocalStageRunner:
    """Runs decoders and encoders in this process, sequentially (the scheduler's seam)."""

    def __init__(
        self,
        decoders: Sequence[VideoDecoder],
        encoders: Sequence[ClipEncoder],
        chunks_ahead: int = BACKPRESSURE_CHUNKS,
    ) -> None:
        if chunks_ahead < 1:
            raise ValueError(f"chunks_ahead must be at least 1, got {chunks_ahead}")
        self.decoders, self.encoders = list(decoders), list(encoders)
        self.chunks_ahead = chunks_ahead

    @classmethod
    def from_config(
        cls, cfg: VMemConfig, checkpoint: str, device: str | None = None
    ) -> LocalStageRunner:
        """The real DecodeStage / EncodeStage, as many as the config's actors."""
        decoders = [
            DecodeStage(cfg.decode, cfg.storage.storage_options)
            for _ in range(cfg.encode.num_decoders)
        ]
        encoders = [
            EncodeStage(checkpoint, device=device, propagate_memory=cfg.encode.propagate_memory)
            for _ in range(cfg.encode.num_actors)
        ]
        return cls(decoders, encoders)

    @property
    def num_decoders(self) -> int:
        return len(self.decoders)

    @property
    def num_encoders(self) -> int:
        return len(self.encoders)

    def start_decode(self, decoder: int, task: VideoTask) -> LocalStream:
        return LocalStream(iter(self.decoders[decoder].stream(task)))

    def ready_streams(self, streams: list[LocalStream]) -> list[LocalStream]:
        for stream in streams:
            self._decode_ahead(stream)
        return [s for s in streams if s.produced or s.exhausted]

    def next_chunk(self, stream: LocalStream) -> DecodedChunk | None:
        self._decode_ahead(stream)
        if stream.produced:
            return stream.produced.popleft()
        if stream.failure is not None:
            failure = stream.failure
            raise StageCallFailed(
                f"decoder raised {type(failure).__name__}: {failure}",
                actor_lost=isinstance(failure, LOST),
            )
        return None

    def cancel_decode(self, stream: LocalStream) -> None:
        close = getattr(stream.chunks, "close", None)
        if close is not None:  # a generator: run its cleanup (open files) now
            close()
        stream.exhausted = True
        stream.produced.clear()

    def submit_encode(self, encoder: int, clips: list[Clip]) -> LocalStep:
        try:
            return LocalStep(records=self.encoders[encoder].encode_step(clips))
        except Exception as exc:  # the step's failure is data, as a failed actor call is
            return LocalStep(failure=exc)

    def finished_steps(self, steps: list[LocalStep]) -> list[LocalStep]:
        return list(steps)  # each ran when submitted

    def step_records(self, step: LocalStep) -> list[MemoryRecord]:
        if step.failure is not None:
            failure = step.failure
            raise StageCallFailed(
                f"encode step raised {type(failure).__name__}: {failure}",
                actor_lost=isinstance(failure, LOST),
            )
        return step.records

    def release(self, encoder: int, video_ids: list[str]) -> None:
        self.encoders[encoder].release(video_ids)

    def wait_for_any(self, streams: list, steps: list, timeout_s: float) -> None:
        raise RuntimeError(
            f"the scheduler waits with nothing in flight ({len(streams)} streams, "
            f"{len(steps)} steps): in process every call finishes at once, so it would hang"
        )

    def _decode_ahead(self, stream: LocalStream) -> None:
        """Run the decoder until it is ``chunks_ahead`` chunks ahead of the consumer."""
        while not stream.exhausted and len(stream.produced) < self.chunks_ahead:
            try:
                stream.produced.append(next(stream.chunks))
            except StopIteration:
                stream.exhausted = True
            except Exception as exc:  # what a crashed decode actor would be
                stream.exhausted, stream.failure = True, exc
