"""The stage runner of production: decode and encode stages as Ray actors.

Decode actors (half a CPU each) stream chunks through Ray generators with backpressure,
so a decoder pauses ``BACKPRESSURE_CHUNKS`` chunks ahead of the driver; their
``max_concurrency`` lets one actor serve its share of the encoder slots at once. Encode
actors take one GPU each when the cluster has one, half a CPU otherwise; Ray runs one
caller's calls to an actor in order, which keeps each video's clips in order.

Ray restarts a lost actor (``retry.actor_restarts`` times) and replays the calls the loss
cut: a decode stream resumes where it was; an encode step past clip 0 finds the carried
memory gone (``CarriedMemoryLost``). Such a failure, or a call that failed for good because
its actor was lost, is ``StageCallFailed(actor_lost=True)``: the scheduler starts the
affected videos again from clip 0. Before saying so the runner waits (up to
``RESTART_WAIT_S``) until the actors answer again: when a node dies, calls fail at once
(``ActorUnavailableError``) until Ray notices and restarts the actor elsewhere, and videos
started again in that window would spend all their tries on the dead node.
"""

from __future__ import annotations

import math
import time

import ray
from ray.exceptions import (
    ActorUnavailableError,
    GetTimeoutError,
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    RayError,
    WorkerCrashedError,
)

from actors.decode import BACKPRESSURE_CHUNKS, make_decode_actor
from actors.encode import CarriedMemoryLost, make_encode_actor
from actors.runtime import gpus_available
from actors.scheduler import StageCallFailed
from schemas.config import VMemConfig
from schemas.records import Clip, DecodedChunk, MemoryRecord, VideoTask


class RayStageRunner:
    """Starts the actors of one ingest run and drives them for the scheduler."""

    def __init__(self, cfg: VMemConfig, checkpoint: str) -> None:
        use_gpu = gpus_available() >= 1
        n_enc, n_dec = cfg.encode.num_actors, cfg.encode.num_decoders
        slots = cfg.encode.batch_videos * n_enc  # video streams open at once
        restarts = cfg.retry.actor_restarts
        decode_cls = make_decode_actor(num_cpus=0.5, max_restarts=restarts)
        self.decoders = [
            decode_cls.options(
                max_concurrency=math.ceil(slots / n_dec) + 1,
                resources=cfg.encode.decode_resources,  # custom resources: where they run
            ).remote(cfg.decode, cfg.storage.storage_options)
            for _ in range(n_dec)
        ]
        encode_cls = make_encode_actor(use_gpu, max_restarts=restarts)
        propagate = cfg.encode.propagate_memory
        self.encoders = [
            encode_cls.options(resources=cfg.encode.encode_resources).remote(
                checkpoint, propagate_memory=propagate
            )
            for _ in range(n_enc)
        ]
        ray.get([e.setup.remote() for e in self.encoders])  # weights load inside the actors

    def close(self) -> None:
        """Stop the actors now (their CPUs/GPUs go back to the cluster)."""
        for actor in [*self.decoders, *self.encoders]:
            ray.kill(actor)
        self.decoders, self.encoders = [], []

    @property
    def num_decoders(self) -> int:
        return len(self.decoders)

    @property
    def num_encoders(self) -> int:
        return len(self.encoders)

    def start_decode(self, decoder: int, task: VideoTask) -> ray.ObjectRefGenerator:
        options = {"_generator_backpressure_num_objects": BACKPRESSURE_CHUNKS}
        return self.decoders[decoder].stream.options(**options).remote(task)

    def ready_streams(self, streams: list) -> list:
        ready, _ = ray.wait(streams, num_returns=len(streams), timeout=0)
        return ready

    def next_chunk(self, stream: ray.ObjectRefGenerator) -> DecodedChunk | None:
        try:
            return ray.get(next(stream))
        except StopIteration:
            return None
        except RayError as exc:
            raise _lost_waited(_call_failed("decode actor failed", exc), self.decoders) from exc

    def cancel_decode(self, stream: ray.ObjectRefGenerator) -> None:
        # dropping the handle alone would let the generator run to the end, unpaused
        try:
            ray.cancel(stream)
        except RayError:  # its actor is gone already: nothing runs to stop
            pass

    def submit_encode(self, encoder: int, clips: list[Clip]) -> ray.ObjectRef:
        return self.encoders[encoder].encode_step.remote(clips)

    def finished_steps(self, steps: list) -> list:
        ready, _ = ray.wait(steps, num_returns=len(steps), timeout=0)
        return ready

    def step_records(self, step: ray.ObjectRef) -> list[MemoryRecord]:
        try:
            return ray.get(step)
        except RayError as exc:
            raise _lost_waited(_call_failed("encode step failed", exc), self.encoders) from exc

    def release(self, encoder: int, video_ids: list[str]) -> None:
        # not replayed: a restarted encoder holds no memory to drop, a closed one needs none
        self.encoders[encoder].release.options(max_task_retries=0).remote(video_ids)

    def wait_for_any(self, streams: list, steps: list, timeout_s: float) -> None:
        waitables = [*streams, *steps]
        if waitables:
            ray.wait(waitables, num_returns=1, timeout=timeout_s)


LOST = (RayActorError, ObjectLostError, NodeDiedError, WorkerCrashedError, CarriedMemoryLost)


RESTART_WAIT_S = 60.0  # how long a loss waits for Ray to bring the actors back


def _lost_waited(failed: StageCallFailed, actors: list) -> StageCallFailed:
    """``failed``, once ``actors`` answer again if it was a loss (a restarted actor does)."""
    if failed.actor_lost:
        wait_until_answering(actors, RESTART_WAIT_S)
    return failed


def wait_until_answering(actors: list, timeout_s: float) -> None:
    """Wait until each actor answers a no-op call, at most ``timeout_s`` in all; an actor
    unavailable for now (its node just died) is asked again; one dead for good (out of
    restarts) or not back in time is left to fail the next calls."""
    deadline = time.monotonic() + timeout_s
    for actor in actors:
        while (left := deadline - time.monotonic()) > 0:
            try:
                ray.get(actor.__ray_ready__.remote(), timeout=left)
                break
            except ActorUnavailableError:
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            except (GetTimeoutError, RayError):
                return


def _call_failed(what: str, exc: RayError) -> StageCallFailed:
    """The scheduler's view of a failed call: was the actor lost, or did the stage raise?"""
    cause = getattr(exc, "cause", None)  # what the stage itself raised (a RayTaskError)
    lost = isinstance(exc, LOST) or isinstance(cause, CarriedMemoryLost)
    if cause is not None:
        detail = f"{type(cause).__name__}: {cause}"
    else:
        detail = f"{type(exc).__name__}: {(str(exc).strip() or '-').splitlines()[0]}"
    return StageCallFailed(f"{what}: {detail}", actor_lost=lost)
