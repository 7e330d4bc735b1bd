"""One writer per database, on a local disk and on object storage: the writer lease.

A database has one writer at a time. ``hold_writer(cfg)`` makes this process that writer
for a ``with`` block (an ingest run holds it from its plan to its last commit); a second
process waits for it, telling who holds it and until when, or gives up after
``storage.writer_wait_s`` with a ``WriterBusy`` error.

- ``s3://``: a lease object ``<db>/.vmem-writer.lease`` written with S3 conditional puts.
  ``If-None-Match: *`` creates it (only one creator wins); ``If-Match: <etag>`` renews,
  releases and takes it over (only one writer of a given version wins). It records the
  holder (host, pid, a random id) and an expiry ``storage.writer_lease_s`` ahead, renewed
  by a background thread every third of that. A holder that dies stops renewing: the next
  writer takes the lease over once it expired, never before. Expiry is judged on the
  holder's written clock and, against a skewed clock, on the waiter's own: a lease whose
  object has not changed for a whole lease period is expired too.
- a local folder: an ``fcntl`` lock on ``<db>/.vmem-writer.lock`` (the kernel frees it when
  its process dies, so a killed writer never blocks the next), with the holder written in
  the file for the waiting message.

Before each commit the writer calls ``check()``: a holder whose lease expired (it could not
renew it, or another writer took it over) stops with ``LeaseLost`` instead of writing
beside the new holder. Limits: a holder paused longer than the lease between ``check()``
and the end of its commit could still overlap one commit with its successor; hosts'
clocks are assumed to agree within a small part of the lease.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from schemas.config import StorageConfig
from storage.uri import endpoint_of, is_s3, join, object_store_message, redact, s3_client, split_s3

LEASE_NAME = ".vmem-writer.lease"  # on object storage
LOCK_NAME = ".vmem-writer.lock"  # in a local database folder
POLL_S = 0.5  # how often a waiting writer looks at the lease again

log = logging.getLogger("vmem.storage.lease")
Notify = Callable[[str], None]


class LeaseError(RuntimeError):
    """The writer lease could not be taken or kept; the message says why, on one line."""


class WriterBusy(LeaseError):
    """Another writer held the lease for longer than this one was willing to wait."""


class LeaseLost(LeaseError):
    """This writer's lease expired or was taken over: it must not commit any more."""


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease object says: who holds it, until when (epoch s), for how long."""

    holder: str
    expires_at: float
    lease_s: float
    released: bool = False

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> LeaseRecord:
        try:
            raw = json.loads(data)
            return cls(str(raw["holder"]), float(raw["expires_at"]), float(raw["lease_s"]),
                       bool(raw.get("released", False)))  # fmt: skip
        except (ValueError, KeyError, TypeError):  # unreadable: treat as free to take over
            return cls("unknown", 0.0, 0.0, released=True)

    def until(self) -> str:
        return datetime.fromtimestamp(self.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def holder_id() -> str:
    """``host:pid:random``: unique per writer, readable in a waiting writer's message."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class WriterHold(Protocol):
    """A held writer lease or lock: ``check`` before each commit, ``release`` at the end."""

    holder: str

    def check(self) -> None: ...

    def release(self) -> None: ...


# ---- object storage: a lease object written with conditional puts ------------------------
class S3LeaseObject:
    """The lease object's three atomic operations, on S3 conditional requests.

    Each returns None when the condition failed (another writer got there first)."""

    def __init__(self, db: str, storage_options: dict[str, Any] | None) -> None:
        self.uri = join(db, LEASE_NAME)
        self.bucket, self.key = split_s3(self.uri)
        self.options = storage_options
        self.client = s3_client(storage_options)

    def create(self, body: bytes) -> str | None:
        return self._put(body, IfNoneMatch="*")

    def replace(self, body: bytes, etag: str) -> str | None:
        return self._put(body, IfMatch=etag)

    def read(self) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
            return response["Body"].read(), response["ETag"]
        except ClientError as exc:
            if _code(exc) in ("NoSuchKey", "404", "NotFound"):
                return None
            raise self._error(exc) from exc
        except Exception as exc:
            raise self._error(exc) from exc

    def _put(self, body: bytes, **condition: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, **condition
            )
            return str(response["ETag"])
        except ClientError as exc:
            # 412: the condition failed; 409: a concurrent conditional write to the key won;
            # NoSuchKey: If-Match on an object deleted meanwhile
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict",
                              "409", "NoSuchKey"):  # fmt: skip
                return None
            raise self._error(exc) from exc
        except Exception as exc:
            raise self._error(exc) from exc

    def _error(self, exc: Exception) -> LeaseError:
        message = object_store_message(exc, self.uri, self.options)
        if message is None:
            message = f"s3 error on the writer lease {self.uri} (endpoint "
            message += f"{endpoint_of(self.options)}): {exc}"
        return LeaseError(redact(message, self.options))


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3WriterLease:
    """A lease on an S3 object, renewed by a daemon thread while held."""

    def __init__(self, cfg: StorageConfig, store: S3LeaseObject | None = None) -> None:
        self.db = cfg.db
        self.lease_s = cfg.writer_lease_s
        self.store = store or S3LeaseObject(cfg.db, cfg.storage_options)
        self.holder = holder_id()
        self._etag: str | None = None
        self._expires_at = 0.0
        self._lost: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # renewals and release never interleave
        self._thread: threading.Thread | None = None

    # -- taking it ------------------------------------------------------------------------
    def acquire(self, wait_s: float, notify: Notify | None = None) -> S3WriterLease:
        """Take the lease, waiting up to ``wait_s`` for a live holder; WriterBusy after."""
        deadline = time.monotonic() + wait_s
        seen: tuple[str, float] | None = None  # (etag, when first seen): the waiter's clock
        told = ""
        while True:
            record = self._record()
            if self._try_take(record):
                self._start_renewing()
                return self
            current = self.store.read()
            if current is None:
                continue  # released and deleted meanwhile: try to create it again
            body, etag = current
            other = LeaseRecord.from_bytes(body)
            if seen is None or seen[0] != etag:
                seen = (etag, time.monotonic())
            stale = time.monotonic() - seen[1] > other.lease_s  # unchanged for a whole lease
            if other.released or other.expires_at < time.time() or stale:
                if self._take_over(etag, record):
                    self._start_renewing()
                    return self
                continue  # another waiter took it over first: look again
            message = (
                f"waiting for the writer lease of {self.db} held by {other.holder} "
                f"until {other.until()}"
            )
            if time.monotonic() >= deadline:
                raise WriterBusy(
                    f"the writer lease of {self.db} is held by {other.holder} until "
                    f"{other.until()}; gave up after {wait_s:g} s (storage.writer_wait_s)"
                )
            if message != told:
                (notify or log.warning)(message)
                told = message
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())) or 0.01)

    def _record(self, released: bool = False) -> LeaseRecord:
        expires = 0.0 if released else time.time() + self.lease_s
        return LeaseRecord(self.holder, expires, self.lease_s, released)

    def _try_take(self, record: LeaseRecord) -> bool:
        etag = self.store.create(record.to_bytes())
        return self._took(etag, record)

    def _take_over(self, etag: str, record: LeaseRecord) -> bool:
        return self._took(self.store.replace(record.to_bytes(), etag), record)

    def _took(self, etag: str | None, record: LeaseRecord) -> bool:
        if etag is None:
            return False
        self._etag, self._expires_at, self._lost = etag, record.expires_at, None
        return True

    # -- keeping it -----------------------------------------------------------------------
    def _start_renewing(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew_loop, name="vmem-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_s / 3):
            try:
                self.renew()
            except LeaseLost:
                return
            except LeaseError as exc:  # S3 unreachable: try again until the lease runs out
                log.warning("could not renew the writer lease of %s: %s", self.db, exc)
                if time.time() >= self._expires_at:
                    self._lost = f"the writer lease of {self.db} expired: {exc}"
                    return

    def renew(self) -> None:
        """Push the expiry ``lease_s`` ahead; LeaseLost when another writer took it over."""
        with self._lock:
            if self._lost or self._etag is None:
                raise LeaseLost(self._lost or f"the writer lease of {self.db} is not held")
            record = self._record()
            etag = self.store.replace(record.to_bytes(), self._etag)
            if etag is None:
                self._lost = f"the writer lease of {self.db} was taken over by another writer"
                raise LeaseLost(self._lost)
            self._etag, self._expires_at = etag, record.expires_at

    def check(self) -> None:
        """Raise LeaseLost unless this writer still holds an unexpired lease."""
        if self._lost:
            raise LeaseLost(self._lost)
        if time.time() >= self._expires_at:
            raise LeaseLost(f"the writer lease of {self.db} expired before it could be renewed")

    def release(self) -> None:
        """Stop renewing and mark the lease released (the next writer takes it at once)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._etag is None or self._lost:
                return
            try:
                self.store.replace(self._record(released=True).to_bytes(), self._etag)
            except LeaseError as exc:  # it expires by itself
                log.warning("could not release the writer lease of %s: %s", self.db, exc)
            self._etag = None


# ---- a local folder: an fcntl lock held for the whole block ------------------------------
class LocalWriterLock:
    """``flock`` on ``<db>/.vmem-writer.lock``; the holder's id is written in the file."""

    def __init__(self, cfg: StorageConfig) -> None:
        self.db = cfg.db
        self.path = Path(cfg.db) / LOCK_NAME
        self.holder = holder_id()
        self._handle: IO[str] | None = None

    def acquire(self, wait_s: float, notify: Notify | None = None) -> LocalWriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open until release()
        deadline, told = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                other = handle.read().strip() or "another process"
                if time.monotonic() >= deadline:
                    handle.close()
                    raise WriterBusy(
                        f"the writer lock of {self.db} is held by {other}; gave up after "
                        f"{wait_s:g} s (storage.writer_wait_s)"
                    ) from None
                if not told:
                    (notify or log.warning)(
                        f"waiting for the writer lock of {self.db} held by {other}"
                    )
                    told = True
                time.sleep(min(POLL_S, max(0.01, deadline - time.monotonic())))
        handle.seek(0)
        handle.truncate()
        handle.write(self.holder)
        handle.flush()
        self._handle = handle
        return self

    def check(self) -> None:
        if self._handle is None:
            raise LeaseLost(f"the writer lock of {self.db} is not held")

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


# ---- one hold per database per process ---------------------------------------------------
_held: dict[str, tuple[WriterHold, int]] = {}  # db -> (hold, nesting depth)
_held_lock = threading.Lock()


@contextmanager
def hold_writer(cfg: StorageConfig, notify: Notify | None = None) -> Iterator[WriterHold]:
    """Be the database's one writer for the block (re-entrant within a process: a commit
    inside an ingest run's hold reuses it after checking it is still valid)."""
    key = cfg.db.rstrip("/") if is_s3(cfg.db) else str(Path(cfg.db).expanduser().absolute())
    with _held_lock:
        entry = _held.get(key)
        if entry is not None:
            entry[0].check()
            _held[key] = (entry[0], entry[1] + 1)
    if entry is None:
        lease: S3WriterLease | LocalWriterLock = (
            S3WriterLease(cfg) if is_s3(cfg.db) else LocalWriterLock(cfg)
        )
        hold: WriterHold = lease.acquire(cfg.writer_wait_s, notify)
        with _held_lock:
            _held[key] = (hold, 1)
    else:
        hold = entry[0]
    try:
        yield hold
    finally:
        with _held_lock:
            current, depth = _held[key]
            if depth > 1:
                _held[key] = (current, depth - 1)
            else:
                del _held[key]
                current.release()
