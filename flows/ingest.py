"""The ingest flow: archive -> memories in LanceDB, each video decoded and encoded once.

Its final state tells a scheduler what happened: Completed when every listed video is done
or unchanged (earlier failures that did not change are counted, not raised again); Failed
when a video newly failed in this run, with ``IngestFailed`` (carrying the report) as the
state's data. The read-only steps and the index refresh are retried (``retry`` section).
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed

from actors.pipeline import IngestPipeline
from actors.runtime import BoundModel, bind_model, check_local_sources, ensure_ray
from actors.writer import MemoryWriter
from flows.progress import IngestProgress
from flows.report import ingest_markdown
from schemas.config import VMemConfig
from schemas.records import IngestReport, VideoOutcome, VideoTask
from storage.archive import ArchiveError, list_source
from storage.catalog import Catalog
from storage.lease import hold_writer
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


@task(name="earlier-failures")
def earlier_failures(skipped: list[VideoTask], cfg: VMemConfig) -> list[tuple[str, str]]:
    """(uri, error) of the skipped videos whose last try failed: unchanged since, not retried."""
    if not skipped:
        return []
    uris = {t.video_id: t.uri for t in skipped}
    failed = Catalog(MemoryStore(cfg.storage)).table.search().where("status = 'failed'")
    rows = failed.select(["video_id", "error"]).limit(None).to_arrow().to_pylist()
    return [(uris[r["video_id"]], r["error"] or "") for r in rows if r["video_id"] in uris]


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
    tasks = retrying(list_archive, config)(source, config)
    # one writer per database from plan to last commit: a second run into the same db waits
    # here (storage.lease; "waiting for the writer lease ... held by X until T")
    with hold_writer(config.storage, notify=get_run_logger().warning):
        deleted = follow_deletions(source, tasks, bound)  # gone from SOURCE -> catalog "deleted"
        todo, skipped = retrying(plan, config)(tasks, config, bound.encoder, retry_failed)
        before = retrying(earlier_failures, config)(skipped, config)  # counted, not raised again
        outcomes, commits = run_pipeline(todo, bound)
        if outcomes:
            retrying(refresh_indexes, config)(config)
        report = summarise(source, config, bound.encoder, outcomes, len(skipped), commits, before)
        report.deleted, report.deleted_uris = len(deleted), deleted
        if outcomes:  # name the table versions this run produced (vmem ... --as-of TAG)
            report.version_tag = tag_version(config)
    report.wall_seconds = time.perf_counter() - started
    create_markdown_artifact(key="vmem-ingest-report", markdown=ingest_markdown(report))
    get_run_logger().info("ingest: %s", report.counts_line())
    if report.failed:  # a video newly failed: the run ends Failed, so that alerts fire
        return Failed(message=report.counts_line(), data=IngestFailed(report))
    return report


class IngestFailed(Exception):
    """Videos newly failed in an ingest run (the Failed state's data); ``report`` says which.

    Calling ``ingest_flow`` directly raises it; ``run_ingest`` returns the report instead."""

    def __init__(self, report: IngestReport) -> None:
        super().__init__(f"ingest of {report.source}: {report.counts_line()}")
        self.report = report

    def __reduce__(self):  # pickled with its report (Prefect may persist the state's data)
        return (IngestFailed, (self.report,))


def run_ingest(
    source: str, config: VMemConfig, retry_failed: bool = False, bound: BoundModel | None = None
) -> IngestReport:
    """Run ``ingest_flow`` in this process and return its report, failed videos or not (the
    flow run's state in Prefect still says Failed when a video newly failed)."""
    try:
        return ingest_flow(source, config, retry_failed, bound=bound)
    except IngestFailed as exc:
        return exc.report


def retrying(step, cfg: VMemConfig):
    """``step`` with the config's Prefect retries; an ArchiveError is final (it names a
    source that is not there, or its S3 client already retried) and is not retried."""
    return step.with_options(
        retries=cfg.retry.task_retries,
        retry_delay_seconds=cfg.retry.task_retry_delay_s,
        retry_condition_fn=_worth_retrying,
    )


def _worth_retrying(task, task_run, state) -> bool:
    return not isinstance(state.result(raise_on_failure=False), ArchiveError)


def summarise(
    source,
    cfg,
    encoder,
    outcomes,
    skipped: int,
    commits: int,
    earlier: list[tuple[str, str]] | None = None,
) -> IngestReport:
    """Fold per-video outcomes into the run's report. ``skipped`` counts every unchanged
    video; ``earlier`` names those of them whose last try failed (reported apart)."""
    earlier = earlier or []
    report = IngestReport(
        source=source,
        db=cfg.storage.db,
        encoder=encoder,
        skipped=skipped - len(earlier),
        failed_before=len(earlier),
        earlier_failures=earlier,
        commits=commits,
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
