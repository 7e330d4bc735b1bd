"""The LanceDB connection, the writer lock and SQL literals: what every table module shares."""

from __future__ import annotations

import fcntl
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import lancedb
import numpy as np

from schemas.config import StorageConfig
from storage.uri import is_s3, lance_options

LOCK_NAME = ".vmem-writer.lock"


IN_CHUNK = 500  # values per IN (...) list, so filters stay a reasonable size


class StorageError(RuntimeError):
    """A table that is missing or does not fit the encoder writing to it."""


def connect(cfg: StorageConfig) -> lancedb.DBConnection:
    """Open the database at ``cfg.db``: a local folder (created) or ``s3://bucket/prefix``.

    Reads check for a newer table version every time, so a reader sees what another process
    committed (one manifest look-up per read)."""
    consistency = timedelta(0)
    if is_s3(cfg.db):
        options = lance_options(cfg.storage_options)
        return lancedb.connect(
            cfg.db, storage_options=options, read_consistency_interval=consistency
        )
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
    """Hold the database's single-writer lock (blocks until free).

    Local: an fcntl lock on ``<db>/.vmem-writer.lock``, across processes on this host.
    On s3:// this is a no-op: there is no shared file system to lock; Lance's conditional
    (compare-and-swap) manifest commits plus the one writer actor of the ingest flow are
    the guarantee there."""
    if is_s3(cfg.db):
        yield
        return
    path = Path(cfg.db)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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


def chunks(items: Sequence[Any], size: int = IN_CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
