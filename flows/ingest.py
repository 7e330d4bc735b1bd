"""The ingest flow: archive -> memories in LanceDB, each video decoded and encoded once."""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from actors.pipeline import IngestPipeline
from actors.runtime import BoundModel, bind_model, check_local_sources, ensure_ray
from actors.writer import MemoryWriter
from flows.progress import IngestProgress
from flows.report import ingest_markdown
from schemas.config import VMemConfig
from schemas.records import IngestReport, VideoOutcome, VideoTask
from storage.archive import list_source
from storage.catalog import Catalog
from storage.memories import MemoryStore
from storage.versions import tag_ingest


@task(name="list-archive")
def list_archive(source: str, cfg: VMemConfig) -> list[VideoTask]:
    """Every video object under SOURCE (a folder or s3://bucket/prefix)."""
    return list_source(source, cfg.storage.storage_options)


@task(name="plan")
def plan(tasks: list[VideoTask], cfg: VMemConfig, encoder: str, retry_failed: bool):
    """Diff against the catalog: (videos to ingest, videos unchanged since last time)."""
    return Catalog(MemoryStore(cfg.storage)).plan(tasks, encoder, retry_failed)


@task(name="decode-encode-commit")
def run_pipeline(todo: list[VideoTask], bound: BoundModel):
    """Decode (CPU actors) -> encode (GPU/CPU actors) -> batched commits by one writer."""
    cfg = bound.config
    writer = MemoryWriter(cfg.storage, bound.encoder, bound.dims)
    outcomes: list[VideoOutcome] = []
    if todo:
        ensure_ray(cfg.ray)
        check_local_sources((t.uri for t in todo), cfg.ray)  # a folder on one node only?
        with (
            IngestProgress(todo, cfg.decode) as progress,  # bars (and metrics, if asked)
            IngestPipeline(cfg, bound.checkpoint) as pipeline,
        ):
            pipeline.runner = progress.watch(pipeline.runner)  # probes, timings, queues

            def on_video(outcome, records):
                outcomes.append(outcome)
                progress.add_to_writer(writer, outcome, records)  # times its commits
                progress.video_done(outcome)

            pipeline.run(todo, on_video, progress.clips_done)
    writer.flush()
    return outcomes, writer.commits


@task(name="follow-deletions")
def follow_deletions(source: str, tasks: list[VideoTask], bound: BoundModel) -> list[str]:
    """Videos of SOURCE that its listing no longer holds -> catalog ``deleted``, memories
    pruned (returns their uris). Runs only after a listing that succeeded; a listing that
    found nothing at all marks nothing (an unmounted disk or a wrong prefix looks the same)."""
    if not tasks:
        get_run_logger().warning(
            "the listing of %s found no video: nothing is marked deleted", source
        )
        return []
    writer = MemoryWriter(bound.config.storage, bound.encoder, bound.dims)
    return writer.follow_deletions(source, tasks)


@task(name="refresh-indexes")
def refresh_indexes(cfg: VMemConfig) -> list[str]:
    """Build the ANN/scalar indexes once the table is big enough, then fold new rows in."""
    return MemoryStore(cfg.storage).create_indexes()


@task(name="tag-version")
def tag_version(cfg: VMemConfig) -> str | None:
    """Tag the memories and videos tables' current versions ``ingest-<UTC time>``."""
    return tag_ingest(MemoryStore(cfg.storage).db)


@flow(name="vmem-ingest", log_prints=True)
def ingest_flow(
    source: str, config: VMemConfig, retry_failed: bool = False, bound: BoundModel | None = None
) -> IngestReport:
    """List -> plan -> decode/encode/commit -> report.

    ``bound``: the model already bound to ``config`` (the CLI binds it first, so that a bad
    model is one clear error); None binds it here, as a deployment calling with a config does.
    """
    started = time.perf_counter()
    if bound is None:  # checkpoint, encoder id, decode config fitted to the model
        bound = bind_model(config)
    tasks = list_archive(source, config)
    deleted = follow_deletions(source, tasks, bound)  # gone from SOURCE -> catalog "deleted"
    todo, skipped = plan(tasks, config, bound.encoder, retry_failed)
    outcomes, commits = run_pipeline(todo, bound)
    if outcomes:
        refresh_indexes(config)
    report = summarise(source, config, bound.encoder, outcomes, len(skipped), commits)
    report.deleted, report.deleted_uris = len(deleted), deleted
    if outcomes:  # name the table versions this run produced (vmem ... --as-of TAG)
        report.version_tag = tag_version(config)
    report.wall_seconds = time.perf_counter() - started
    create_markdown_artifact(key="vmem-ingest-report", markdown=ingest_markdown(report))
    get_run_logger().info(
        "ingest: %d done, %d failed, %d skipped", report.done, report.failed, report.skipped
    )
    return report


def summarise(source, cfg, encoder, outcomes, skipped: int, commits: int) -> IngestReport:
    """Fold per-video outcomes into the run's report."""
    report = IngestReport(
        source=source, db=cfg.storage.db, encoder=encoder, skipped=skipped, commits=commits
    )
    for outcome in outcomes:
        if outcome.status == "done":
            report.done += 1
            report.clips += outcome.n_clips
            report.video_seconds += outcome.probe.duration_s if outcome.probe else 0.0
        else:
            report.failed += 1
            report.failures.append((outcome.task.uri, str(outcome.error)))
    return report
