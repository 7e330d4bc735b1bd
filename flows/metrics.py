"""Prometheus metrics of an ingest run (prometheus-client), when an operator asks for them.

``vmem ingest --metrics-port N`` serves them on 127.0.0.1:N while the run goes (Prometheus
scrapes it); ``--pushgateway URL`` pushes them to a Pushgateway when the run ends (a batch
job outlives no scrape). Nothing is collected unless one of the two was asked for.

The run's progress (flows.progress) feeds them: videos finished, clips encoded and their
rate, how long decode chunks, encode steps and commits take, and how deep the queues are.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

JOB = "vmem-ingest"  # the Pushgateway job name
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)  # seconds


@dataclass
class IngestMetrics:
    """The collectors of one ingest process, in a registry of their own."""

    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.videos = Counter(
            "vmem_ingest_videos", "videos finished, by how they ended", ["status"], registry=r
        )
        self.clips = Counter("vmem_ingest_clips", "clips encoded into memories", registry=r)
        self.clips_per_second = Gauge(
            "vmem_ingest_clips_per_second",
            "clips encoded per second since the run began",
            registry=r,
        )
        self.stage_seconds = Histogram(
            "vmem_ingest_stage_seconds",
            "seconds per decoded chunk (as the driver waits for it), per encode step "
            "(submitted to collected) and per commit",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "vmem_ingest_queue_depth",
            "videos waiting for a slot, decode streams open, encode steps in flight",
            ["queue"],
            registry=r,
        )
        self.videos_total = Gauge(
            "vmem_ingest_videos_planned", "videos this run set out to ingest", registry=r
        )
        for status in ("done", "failed"):
            self.videos.labels(status)  # both series exist from the start (0 until one ends)
        self._started, self._clips = time.monotonic(), 0

    def clips_done(self, n: int) -> None:
        self.clips.inc(n)
        self._clips += n
        elapsed = time.monotonic() - self._started
        if elapsed > 0:
            self.clips_per_second.set(self._clips / elapsed)

    @contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.stage_seconds.labels(stage).observe(time.perf_counter() - started)


_current: IngestMetrics | None = None  # set by ``collect`` for the run in this process


def current() -> IngestMetrics | None:
    """The metrics an operator asked for in this process, or None (collect nothing)."""
    return _current


class MetricsError(RuntimeError):
    """The metrics port cannot be opened, or the Pushgateway cannot be reached (one line)."""


@contextmanager
def collect(
    port: int | None = None, pushgateway: str | None = None, warn=print
) -> Iterator[IngestMetrics | None]:
    """Collect an ingest run's metrics: served on 127.0.0.1:``port`` while the process
    lives, and/or pushed to ``pushgateway`` when the block ends (a push that fails is a
    ``warn``ing: the run's outcome stands). Neither given: nothing is collected."""
    global _current
    if port is None and pushgateway is None:
        yield None
        return
    from prometheus_client import push_to_gateway, start_http_server

    metrics = IngestMetrics()
    if port is not None:
        try:
            start_http_server(port, addr="127.0.0.1", registry=metrics.registry)
        except OSError as exc:
            raise MetricsError(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}") from exc
    _current = metrics
    try:
        yield metrics
    finally:
        _current = None
        if pushgateway is not None:
            try:
                push_to_gateway(pushgateway, job=JOB, registry=metrics.registry, timeout=10)
            except OSError as exc:  # URLError, refused, timed out
                warn(f"metrics not pushed to {pushgateway}: {getattr(exc, 'reason', exc)}")
