"""The maintenance flow: compact the tables, clean up old versions, refresh the indexes.

Scheduled nightly in deploy/prefect.yaml (``nightly-maintenance``) and run by hand with
``vmem maintain``. It holds the writer lock, so it never compacts under an ingest's commits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from schemas.config import VMemConfig
from schemas.tables import MEMORIES, VIDEO_ENCODERS, VIDEOS
from storage.db import open_table, writer_lock
from storage.memories import MemoryStore
from storage.versions import retire_ingest_tags

TABLES = (MEMORIES, VIDEOS, VIDEO_ENCODERS)
OPTIMIZE_KEEPS = timedelta(days=36_500)  # what optimize's own clean-up step may not touch


@task(name="compact-and-clean-up")
def compact_tables(cfg: VMemConfig) -> list[str]:
    """Per table: retire ingest tags past the retention; compact and fold new rows into the
    indexes (``optimize``); then remove the untagged versions older than the retention."""
    days = cfg.storage.keep_versions_days
    retention = timedelta(days=days)
    cutoff = datetime.now(UTC) - retention
    db = MemoryStore(cfg.storage).db
    lines = []
    for name in TABLES:
        table = open_table(db, name)
        if table is None:
            continue
        retired = retire_ingest_tags(table, cutoff)
        # optimize's own clean-up refuses to run past a tagged version: keep it out of reach
        # and clean up below, sparing the tagged versions (--as-of TAG keeps working)
        fragments = table.stats()["fragment_stats"]["num_fragments"]
        table.optimize(cleanup_older_than=OPTIMIZE_KEEPS)  # returns nothing: count around it
        compacted = table.stats()["fragment_stats"]["num_fragments"]
        removed = table.to_lance().cleanup_old_versions(
            older_than=retention, error_if_tagged_old_versions=False
        )
        lines.append(
            f"{name}: {fragments} fragments compacted into {compacted}; "
            f"{removed.old_versions} versions older than "
            f"{days:g} days removed ({removed.bytes_removed:,} bytes); {len(retired)} ingest "
            f"tags retired; now version {table.version}"
        )
    return lines


@task(name="refresh-indexes")
def refresh_indexes(cfg: VMemConfig) -> list[str]:
    """Build the scalar indexes that are missing (and the ANN index once the table has
    enough rows for it), or fold new rows into them."""
    store = MemoryStore(cfg.storage)
    if open_table(store.db, MEMORIES) is None:
        return []
    done = store.create_indexes()
    return [f"{MEMORIES}: {', '.join(done) if done else 'indexes up to date'}"]


@flow(name="vmem-maintain", log_prints=True)
def maintain_flow(config: VMemConfig) -> list[str]:
    """Compact + clean up (every table) -> refresh the memories indexes; one line per step."""
    with writer_lock(config.storage):
        lines = compact_tables(config)
        lines += refresh_indexes(config)
    if not lines:
        lines = [f"nothing to maintain in {config.storage.db}: no tables yet"]
    create_markdown_artifact(
        key="vmem-maintain-report", markdown="\n".join(f"- {line}" for line in lines)
    )
    logger = get_run_logger()
    for line in lines:
        logger.info(line)
    return lines
