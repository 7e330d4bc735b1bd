"""The LanceDB connection, the writer lock and SQL literals: what every table module shares."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np

from schemas.config import StorageConfig
from storage.lease import LOCK_NAME as LOCK_NAME  # the local writer lock's file name
from storage.lease import hold_writer
from storage.uri import is_s3, lance_options, object_store_message

IN_CHUNK = 500  # values per IN (...) list, so filters stay a reasonable size


class StorageError(RuntimeError):
    """A table that is missing or does not fit the encoder writing to it, or a database on
    object storage that cannot be reached (the message names the endpoint)."""


def connect(cfg: StorageConfig) -> lancedb.DBConnection:
    """Open the database at ``cfg.db``: a local folder (created) or ``s3://bucket/prefix``.

    Reads check for a newer table version every time, so a reader sees what another process
    committed (one manifest look-up per read)."""
    consistency = timedelta(0)
    if is_s3(cfg.db):
        options = lance_options(cfg.storage_options)
        try:
            return lancedb.connect(
                cfg.db, storage_options=options, read_consistency_interval=consistency
            )
        except (ValueError, OSError, RuntimeError) as exc:  # a Rust error struct: one line
            message = object_store_message(exc, cfg.db, cfg.storage_options)
            if message is None:
                raise
            raise StorageError(message) from exc
    Path(cfg.db).mkdir(parents=True, exist_ok=True)
    return lancedb.connect(cfg.db, read_consistency_interval=consistency)


def open_table(db: lancedb.DBConnection, name: str) -> Any | None:
    """The table ``name``, or None when it does not exist yet."""
    try:
        return db.open_table(name)
    except ValueError as exc:  # LanceDB: "Table 'x' was not found"
        if "not found" in str(exc).lower():
            return None
        raise


@contextmanager
def writer_lock(cfg: StorageConfig) -> Iterator[None]:
    """Be the database's single writer for one commit (or a maintenance step).

    Across processes and hosts: the writer lease of ``storage.lease`` (an fcntl lock on
    ``<db>/.vmem-writer.lock`` for a local folder, a conditional-put lease object on
    s3://), waited for when another process holds it; inside an ingest run, which holds the
    lease for the whole run, it is reused after checking it was not lost (LeaseLost).
    Within this process, threads take turns."""
    with _commit_lock(cfg.db), hold_writer(cfg):
        yield


_commit_locks: dict[str, threading.RLock] = {}


def _commit_lock(db: str) -> threading.RLock:
    return _commit_locks.setdefault(db, threading.RLock())


def sql_literal(value: Any) -> str:
    """A value as a Lance filter literal (strings quoted with '' escaping)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | np.integer):
        return str(int(value))
    return "'" + str(value).replace("'", "''") + "'"


def in_list(column: str, values: Iterable[Any]) -> str:
    """``column IN (v1, v2, ...)`` with quoted literals."""
    return f"{column} IN ({', '.join(sql_literal(v) for v in values)})"


def delete_rows(table: Any, predicate: str) -> int:
    """Delete the rows matching ``predicate``; returns how many. A count first, and a delete
    commit only when something matches (each commit is a round trip on object storage)."""
    found = table.count_rows(predicate)
    if found:
        table.delete(predicate)
    return found


def delete_videos_from(table: Any, video_ids: Sequence[Any]) -> int:
    """Delete every row of some videos (``video_id IN ...``, 500 at a time); returns how many."""
    return sum(
        delete_rows(table, in_list("video_id", ids))
        for ids in chunks(list(dict.fromkeys(video_ids)))
    )


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
