"""The writer lease on moto's S3 server (conditional puts) and the local writer lock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from schemas.config import StorageConfig
from storage.db import writer_lock
from storage.lease import (
    LEASE_NAME,
    LeaseLost,
    LeaseRecord,
    LocalWriterLock,
    S3LeaseObject,
    S3WriterLease,
    WriterBusy,
    hold_writer,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def s3_cfg(s3_server, s3_bucket):
    def make(lease_s: float = 60.0, wait_s: float = 0.0) -> StorageConfig:
        return StorageConfig(
            db=f"s3://{bucket}/db",
            storage_options=s3_server,
            writer_lease_s=lease_s,
            writer_wait_s=wait_s,
        )

    bucket = s3_bucket("lease")
    return make


def lease_record(cfg: StorageConfig) -> tuple[LeaseRecord, str]:
    body, etag = S3LeaseObject(cfg.db, cfg.storage_options).read()
    return LeaseRecord.from_bytes(body), etag


def test_conditional_puts_on_moto(s3_cfg):
    """What the lease relies on, checked against the server: create-if-absent and
    replace-if-unchanged each succeed once."""
    store = S3LeaseObject(s3_cfg().db, s3_cfg().storage_options)
    first = store.create(b"a")
    assert first is not None and store.create(b"b") is None
    second = store.replace(b"c", first)
    assert second is not None and second != first
    assert store.replace(b"d", first) is None  # stale etag: refused
    assert store.read() == (b"c", second)


def test_acquire_records_holder_and_release_frees_it(s3_cfg):
    cfg = s3_cfg()
    lease = S3WriterLease(cfg).acquire(wait_s=0)
    record, _ = lease_record(cfg)
    assert record.holder == lease.holder and f":{os.getpid()}:" in lease.holder
    assert not record.released and record.expires_at > time.time() + 50
    assert lease.store.uri == f"{cfg.db}/{LEASE_NAME}"
    lease.release()
    assert lease_record(cfg)[0].released
    other = S3WriterLease(cfg).acquire(wait_s=0)  # a released lease is taken at once
    assert lease_record(cfg)[0].holder == other.holder
    other.release()


def test_second_writer_waits_then_gives_up_naming_the_holder(s3_cfg):
    holder = S3WriterLease(s3_cfg(lease_s=1.0)).acquire(wait_s=0)
    try:
        with pytest.raises(WriterBusy, match=f"held by {holder.holder} until .* UTC"):
            S3WriterLease(s3_cfg()).acquire(wait_s=0)
        said: list[str] = []
        started = time.monotonic()
        with pytest.raises(WriterBusy, match="gave up after 2.5 s"):
            S3WriterLease(s3_cfg()).acquire(wait_s=2.5, notify=said.append)
        # 2.5 s is more than the 1 s lease: it was renewed meanwhile, so never taken over
        assert time.monotonic() - started >= 2.5
        assert said and said[0].startswith(f"waiting for the writer lease of {s3_cfg().db}")
        assert holder.holder in said[0]
        holder.check()
        assert lease_record(s3_cfg())[0].holder == holder.holder
    finally:
        holder.release()


def test_waiting_writer_takes_the_lease_once_released(s3_cfg):
    holder = S3WriterLease(s3_cfg()).acquire(wait_s=0)
    threading.Timer(1.0, holder.release).start()
    started = time.monotonic()
    waiter = S3WriterLease(s3_cfg()).acquire(wait_s=30)
    assert 0.9 < time.monotonic() - started < 10
    assert lease_record(s3_cfg())[0].holder == waiter.holder
    waiter.release()


def test_renewal_moves_the_expiry(s3_cfg):
    cfg = s3_cfg(lease_s=1.2)
    lease = S3WriterLease(cfg).acquire(wait_s=0)
    first, etag = lease_record(cfg)
    time.sleep(1.5)  # past the first expiry: renewed every 0.4 s
    second, etag2 = lease_record(cfg)
    assert etag2 != etag and second.expires_at > first.expires_at + 0.5
    lease.check()
    lease.release()


def test_expired_lease_is_taken_over_and_the_old_holder_stops(s3_cfg):
    cfg = s3_cfg(lease_s=1.0)
    stalled = S3WriterLease(cfg).acquire(wait_s=0)
    stalled._stop.set()  # a holder that stopped renewing (hung, or cut off from S3)
    stalled._thread.join()
    started = time.monotonic()
    successor = S3WriterLease(s3_cfg(wait_s=10)).acquire(wait_s=10)
    waited = time.monotonic() - started
    assert 0.5 < waited < 3, waited  # not before the expiry, not long after it
    assert lease_record(cfg)[0].holder == successor.holder
    with pytest.raises(LeaseLost):
        stalled.check()  # past its own expiry
    with pytest.raises(LeaseLost, match="taken over"):
        stalled.renew()
    stalled.release()  # a no-op: it must not free the successor's lease
    assert lease_record(cfg)[0].holder == successor.holder and not lease_record(cfg)[0].released
    successor.release()


def test_lease_unchanged_for_a_whole_period_is_stale_whatever_its_clock(s3_cfg):
    """A holder whose clock runs an hour ahead wrote a far expiry, then died: the waiter
    judges by its own clock that the object has not changed for a whole lease period."""
    cfg = s3_cfg()
    ahead = LeaseRecord("skewed:1:dead", time.time() + 3600, 1.0)
    S3LeaseObject(cfg.db, cfg.storage_options).create(ahead.to_bytes())
    started = time.monotonic()
    lease = S3WriterLease(cfg).acquire(wait_s=10)
    assert 0.9 < time.monotonic() - started < 4
    lease.release()


def test_hold_writer_is_reentrant_and_commits_reuse_it(s3_cfg):
    cfg = s3_cfg()
    with hold_writer(cfg) as run:
        with writer_lock(cfg), writer_lock(cfg):  # the commits of the run
            assert lease_record(cfg)[0].holder == run.holder
        assert not lease_record(cfg)[0].released  # still the run's
    assert lease_record(cfg)[0].released
    with hold_writer(cfg) as later:
        assert later.holder != run.holder


def test_local_lock_waits_names_the_holder_and_gives_up(tmp_path):
    cfg = StorageConfig(db=str(tmp_path / "db"), writer_wait_s=0)
    first = LocalWriterLock(cfg).acquire(wait_s=0)
    said: list[str] = []
    with pytest.raises(WriterBusy, match=f"held by {first.holder}; gave up after 0.6 s"):
        LocalWriterLock(cfg).acquire(wait_s=0.6, notify=said.append)
    assert said == [f"waiting for the writer lock of {cfg.db} held by {first.holder}"]
    first.release()
    second = LocalWriterLock(cfg).acquire(wait_s=0)
    second.check()
    second.release()
    with pytest.raises(LeaseLost):
        second.check()


def test_cli_gives_lease_and_storage_errors_their_exit_codes(capsys):
    import typer

    from cli.app import EXIT_STORAGE, EXIT_WRITER_BUSY, _storage_errors
    from schemas.config import VMemConfig
    from storage.lease import LeaseError

    options = {"aws_secret_access_key": "cli-secret-31"}
    cfg = VMemConfig(storage=StorageConfig(db="s3://b/db", storage_options=options))
    for error, code in [(WriterBusy, EXIT_WRITER_BUSY), (LeaseLost, EXIT_STORAGE),
                        (LeaseError, EXIT_STORAGE)]:  # fmt: skip
        with pytest.raises(typer.Exit) as raised, _storage_errors(cfg):
            raise error("the writer lease of s3://b/db ... key cli-secret-31")
        assert raised.value.exit_code == code
        printed = capsys.readouterr().err
        assert printed.startswith("error: the writer lease of s3://b/db")
        assert "cli-secret-31" not in printed and printed.count("\n") == 1
    with pytest.raises(KeyError), _storage_errors(cfg):  # not a storage failure: raised
        raise KeyError("a bug")
