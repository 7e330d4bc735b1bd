"""What an operator sees while an ingest runs: a start-up spinner, then a videos bar and a
clips bar with its total (estimated from the probed durations), rate and ETA. Quiet when
stderr is not a terminal. The same events feed the run's Prometheus metrics when they were
asked for (flows.metrics)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.text import Text

from flows import metrics as run_metrics
from schemas.config import DecodeConfig
from schemas.records import DecodedChunk, VideoOutcome, VideoTask

_startup: Status | None = None  # the spinner shown until the first bar appears


@contextmanager
def startup(console: Console, message: str = "starting: model, Prefect, Ray") -> Iterator[None]:
    """A spinner from the command's start until the ingest's bars replace it."""
    global _startup
    if not console.is_terminal:
        yield
        return
    _startup = console.status(f"[bold]{message}…")
    _startup.start()
    try:
        yield
    finally:
        _stop_startup()


def _stop_startup() -> None:
    global _startup
    if _startup is not None:
        _startup.stop()
        _startup = None


class RateColumn(ProgressColumn):
    """Items per second of a bar (Rich's speed over its recent samples)."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("" if speed is None else f"{speed:.1f} {self.unit}/s", style="cyan")


def expected_clips(duration_s: float, decode: DecodeConfig) -> int:
    """Clips a video of ``duration_s`` gives: samples at k/fps < duration, T per clip."""
    samples = max(1, math.ceil(duration_s * decode.sample_fps - 1e-6))
    return math.ceil(samples / (decode.clip_frames or 1))


class IngestProgress:
    """Two bars: videos finished (done or failed) and clips encoded.

    The clips bar's total is the sum of the probed videos' clips plus, for videos not yet
    probed, their bytes at the clips-per-byte seen so far; it settles as videos are probed.
    """

    def __init__(
        self,
        todo: Sequence[VideoTask],
        decode: DecodeConfig,
        console: Console | None = None,
    ):
        console = console or Console(stderr=True)
        self._progress = Progress(
            SpinnerColumn(finished_text=" "),
            TextColumn("[bold]{task.description:<7}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            RateColumn("clips"),
            TimeRemainingColumn(compact=True),
            TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            disable=not console.is_terminal,
            transient=False,
        )
        self.decode = decode
        self.sizes = {t.video_id: t.size for t in todo}
        self.probed: dict[str, int] = {}  # video id -> its clips, from the probed duration
        self.metrics = run_metrics.current()
        self._videos = self._progress.add_task("videos", total=len(todo), note="")
        self._clips = self._progress.add_task("clips", total=None, note="starting actors")
        self._failed = 0
        if self.metrics is not None:
            self.metrics.videos_total.set(len(todo))

    def __enter__(self) -> IngestProgress:
        _stop_startup()  # one live display at a time: the bars take over from the spinner
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    # ---- events of the run ---------------------------------------------------------------
    def video_done(self, outcome: VideoOutcome) -> None:
        self._failed += outcome.status != "done"
        note = f"[red]{self._failed} failed" if self._failed else ""
        self._progress.update(self._videos, advance=1, note=note)
        if outcome.status == "done":  # its clips are known exactly now
            self.probed[outcome.task.video_id] = outcome.n_clips
        else:
            self.sizes.pop(outcome.task.video_id, None)  # no more clips will come from it
            self.probed.pop(outcome.task.video_id, None)
        self._update_total()
        if self.metrics is not None:
            self.metrics.videos.labels(outcome.status).inc()

    def clips_done(self, n: int) -> None:
        self._progress.update(self._clips, advance=n, note="")
        if self.metrics is not None:
            self.metrics.clips_done(n)

    def probed_chunk(self, chunk: DecodedChunk) -> None:
        """A video's first chunk carries its probe: its clips are known from then on."""
        if chunk.probe is not None and chunk.video_id not in self.probed:
            self.probed[chunk.video_id] = expected_clips(chunk.probe.duration_s, self.decode)
            self._update_total()

    def add_to_writer(self, writer: Any, outcome: VideoOutcome, records: list) -> None:
        """``writer.add``, its commits (when the add fills a batch) timed into the metrics."""
        before, started = writer.commits, time.perf_counter()
        writer.add(outcome, records)
        if writer.commits != before and self.metrics is not None:
            elapsed = time.perf_counter() - started
            self.metrics.stage_seconds.labels("commit").observe(elapsed)

    def queue_depths(self, **depths: int) -> None:
        if self.metrics is not None:
            for queue, depth in depths.items():
                self.metrics.queue_depth.labels(queue).set(depth)

    def watch(self, runner: Any) -> WatchedRunner:
        """``runner`` (a StageRunner) seen by this progress: probes, timings, queue depths."""
        return WatchedRunner(runner, self, len(self.sizes))

    def _update_total(self) -> None:
        known = {v: n for v, n in self.probed.items() if v in self.sizes}
        if not known:
            return
        probed_bytes = sum(self.sizes[v] for v in known) or 1
        per_byte = sum(known.values()) / probed_bytes
        unknown = sum(size for v, size in self.sizes.items() if v not in known)
        total = sum(known.values()) + round(unknown * per_byte)
        done = self._progress.tasks[self._clips].completed
        self._progress.update(self._clips, total=max(total, done))


class WatchedRunner:
    """A StageRunner passed through unchanged, with the progress told what goes by: each
    video's probe (the clips bar's total), seconds per decoded chunk and per encode step,
    and the depths of the queues (for the metrics)."""

    def __init__(self, runner: Any, progress: IngestProgress, n_videos: int) -> None:
        self._runner, self._progress = runner, progress
        self._waiting = n_videos  # videos not yet given a decode stream
        self._last_chunk: dict[Any, float] = {}  # open stream -> when its last chunk came
        self._steps: dict[Any, float] = {}  # encode step in flight -> when it was sent

    def __getattr__(self, name: str) -> Any:  # everything not watched goes straight through
        return getattr(self._runner, name)

    def start_decode(self, decoder: int, task: VideoTask) -> Any:
        stream = self._runner.start_decode(decoder, task)
        self._waiting -= 1
        self._last_chunk[stream] = time.perf_counter()
        self._depths()
        return stream

    def next_chunk(self, stream: Any) -> DecodedChunk | None:
        try:
            chunk = self._runner.next_chunk(stream)
        except Exception:
            self._close(stream)
            raise
        now = time.perf_counter()
        started = self._last_chunk.get(stream)
        if started is not None and self._progress.metrics is not None:
            self._progress.metrics.stage_seconds.labels("decode").observe(now - started)
        self._last_chunk[stream] = now
        if chunk is None or chunk.last or chunk.error is not None:
            self._close(stream)
        if chunk is not None:
            self._progress.probed_chunk(chunk)
        return chunk

    def cancel_decode(self, stream: Any) -> None:
        self._close(stream)
        self._runner.cancel_decode(stream)

    def submit_encode(self, encoder: int, clips: list) -> Any:
        step = self._runner.submit_encode(encoder, clips)
        self._steps[step] = time.perf_counter()
        self._depths()
        return step

    def step_records(self, step: Any) -> list:
        sent = self._steps.pop(step, None)
        try:
            return self._runner.step_records(step)
        finally:
            if sent is not None and self._progress.metrics is not None:
                elapsed = time.perf_counter() - sent
                self._progress.metrics.stage_seconds.labels("encode").observe(elapsed)
            self._depths()

    def _close(self, stream: Any) -> None:
        self._last_chunk.pop(stream, None)
        self._depths()

    def _depths(self) -> None:
        self._progress.queue_depths(
            videos_waiting=max(self._waiting, 0),
            decode_streams=len(self._last_chunk),
            encode_steps=len(self._steps),
        )
