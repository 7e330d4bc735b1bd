"""The ingest driver: the scheduler (actors.scheduler) over Ray actors (actors.ray_runner).

``IngestPipeline`` owns the decode and encode actors of one ingest run; ``run`` streams
clips from the decoders into the encoders with continuous batching across videos and
calls back once per finished video. Failures become ``VideoOutcome``s; the batch goes on;
a lost actor is restarted by Ray and its videos are started again (actors.scheduler).
"""

from __future__ import annotations

from collections.abc import Iterable

from actors.ray_runner import RayStageRunner
from actors.scheduler import IngestScheduler, OnClips, OnVideo
from schemas.config import VMemConfig
from schemas.records import VideoTask


class IngestPipeline:
    """Owns the decode and encode actors of one ingest run (a context manager)."""

    def __init__(self, cfg: VMemConfig, checkpoint: str):
        self.cfg = cfg
        self.runner = RayStageRunner(cfg, checkpoint)

    @property
    def decoders(self) -> list:
        """The decode actor handles (benchmarks drive them directly)."""
        return self.runner.decoders

    @property
    def encoders(self) -> list:
        """The encode actor handles."""
        return self.runner.encoders

    def close(self) -> None:
        """Stop the actors now (their CPUs/GPUs go back to the cluster)."""
        self.runner.close()

    def __enter__(self) -> IngestPipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(
        self, tasks: Iterable[VideoTask], on_video: OnVideo, on_clips: OnClips | None = None
    ) -> None:
        """Ingest ``tasks``; call ``on_video`` once per video as soon as it is complete."""
        scheduler = IngestScheduler(
            self.runner,
            self.cfg.encode.batch_videos,
            on_video,
            on_clips,
            max_attempts=self.cfg.retry.video_attempts,
        )
        scheduler.run(tasks)
