"""Encoders side by side (the per-encoder ledger, plan, summary, prune) and table versions
(ingest tags, --as-of resolution, reading as of a point, retiring old tags)."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from schemas.records import VideoOutcome, VideoProbe
from schemas.tables import MEMORIES, VIDEOS
from storage.catalog import Catalog
from storage.db import StorageError, open_table, writer_lock
from storage.encoders import EncoderLedger, bytes_per_clip, encoder_summary, prune_encoder
from storage.memories import MemoryStore
from storage.versions import (
    AsOfConnection,
    VersionError,
    resolve_as_of,
    retire_ingest_tags,
    tag_ingest,
    version_rows,
)

A, B = "enc-a@1", "enc-b@2"
PROBE = VideoProbe(duration_s=32.0, fps=25.0, width=64, height=48, codec="h264")


def commit(store, tasks, encoder, fake, n_clips=2, status="done"):
    """One commit step as the writer makes it: memories, catalog, then the ledger."""
    outcomes = [VideoOutcome(t, status, n_clips if status == "done" else 0, PROBE) for t in tasks]
    with writer_lock(store.cfg):
        if status == "done":
            records = [r for t in tasks for r in fake.records(t, n_clips)]
            store.write_memories(records, encoder, {t.video_id: t for t in tasks})
        Catalog(store).record(outcomes, encoder)
        EncoderLedger(store.db).record(outcomes, encoder)


def ids(tasks):
    return sorted(t.video_id for t in tasks)


@pytest.fixture(params=["lookups", "one-scan"])
def lookups(request, monkeypatch):
    """Plan both ways: IN-list lookups (small listings) and one scan (big ones)."""
    if request.param == "one-scan":
        monkeypatch.setattr("storage.catalog.PLAN_LOOKUP_MAX", 1)
        monkeypatch.setattr("storage.encoders.LOOKUP_MAX", 1)


def test_switching_back_to_an_encoder_re_encodes_nothing(store, fake, lookups):
    videos = [fake.task("v1"), fake.task("v2"), fake.task("v3")]
    catalog = Catalog(store)
    todo, skipped = catalog.plan(videos, A)
    assert ids(todo) == ids(videos) and skipped == []
    commit(store, videos, A, fake)

    todo, _ = catalog.plan(videos, B)  # a new encoder: everything is new to it
    assert ids(todo) == ids(videos)
    commit(store, videos, B, fake)
    assert {r["encoder"] for r in catalog.all(["encoder"]).to_pylist()} == {B}  # the latest

    todo, skipped = catalog.plan(videos, A)  # back to A: nothing to encode
    assert todo == [] and ids(skipped) == ids(videos)
    todo, skipped = catalog.plan(videos, B)
    assert todo == [] and ids(skipped) == ids(videos)

    changed = replace(videos[0], etag="e2")  # a video that changed is new to both
    assert catalog.plan([changed, videos[1]], A)[0] == [changed]
    assert catalog.plan([changed, videos[1]], B)[0] == [changed]
    clips = store.scan(None, ["encoder"]).column("encoder").to_pylist()
    assert clips.count(A) == clips.count(B) == 2 * len(videos)  # both kept side by side


def test_failures_are_per_encoder_and_a_catalog_row_not_done_re_encodes(store, fake, lookups):
    ok, flaky = fake.task("ok"), fake.task("flaky")
    catalog = Catalog(store)
    commit(store, [ok], A, fake)
    commit(store, [flaky], A, fake, status="failed")
    todo, skipped = catalog.plan([ok, flaky], A)
    assert todo == [] and ids(skipped) == ids([ok, flaky])  # failed stays failed ...
    assert catalog.plan([ok, flaky], A, retry_failed=True)[0] == [flaky]  # ... unless asked

    commit(store, [flaky], B, fake)  # B manages it: A's failure is still A's
    assert catalog.plan([flaky], B)[0] == [] and catalog.plan([flaky], A)[0] == []
    commit(store, [ok], B, fake, status="failed")  # B fails on it: the catalog row says so
    assert catalog.get([ok.video_id])[ok.video_id]["status"] == "failed"
    # A's memories of it are done, but the catalog no longer lists it done: encode again,
    # so that the catalog row (which the query path follows) says done once more
    assert catalog.plan([ok], A)[0] == [ok]


def test_a_database_from_before_the_ledger_keeps_its_latest_encoder_settled(store, fake):
    old, new = fake.task("old"), fake.task("new")
    Catalog(store).record([VideoOutcome(old, "done", 2, PROBE)], A)  # no ledger written
    assert open_table(store.db, "video_encoders") is None
    catalog = Catalog(store)
    assert catalog.plan([old], A)[0] == [] and catalog.plan([old], B)[0] == [old]

    commit(store, [new], B, fake)  # the first ledger write seeds it from the catalog
    entries = EncoderLedger(store.db).lookup(A, [old.video_id, new.video_id], {})
    assert set(entries) == {old.video_id} and entries[old.video_id]["n_clips"] == 2
    assert catalog.plan([old, new], A)[0] == [new] and catalog.plan([old, new], B)[0] == [old]


def test_summary_counts_videos_clips_and_estimated_bytes(store, fake):
    v1, v2, bad = fake.task("v1"), fake.task("v2"), fake.task("bad")
    commit(store, [v1, v2], A, fake, n_clips=3)
    commit(store, [v1], B, fake, n_clips=2)
    commit(store, [bad], B, fake, status="failed")
    per_clip = fake.Q * 4 + fake.M * fake.D + fake.M * 4  # float32 key, int8 tokens, scales
    assert bytes_per_clip(store.table.schema) == per_clip
    rows = {r["encoder"]: r for r in encoder_summary(store)}
    assert set(rows) == {A, B}
    assert (rows[A]["videos"], rows[A]["clips"], rows[A]["failed"]) == (2, 6, 0)
    assert (rows[B]["videos"], rows[B]["clips"], rows[B]["failed"]) == (1, 2, 1)
    assert rows[A]["bytes"] == 6 * per_clip and rows[B]["bytes"] == 2 * per_clip
    assert rows[B]["last_ingest"] >= rows[A]["last_ingest"]


def test_prune_removes_one_encoder_and_its_videos_come_back_new(store, fake):
    videos = [fake.task("v1"), fake.task("v2")]
    commit(store, videos, A, fake)
    commit(store, videos, B, fake)
    assert prune_encoder(store, A) == (4, 2)  # clips, ledger entries
    left = store.scan(None, ["encoder"]).column("encoder").to_pylist()
    assert left == [B] * 4
    assert [r["encoder"] for r in encoder_summary(store)] == [B]
    catalog = Catalog(store)
    assert ids(catalog.plan(videos, A)[0]) == ids(videos)  # A is new again
    assert catalog.plan(videos, B)[0] == []
    with pytest.raises(StorageError, match="no encoder 'enc-a@1'"):
        prune_encoder(store, A)


# ---- versions ----------------------------------------------------------------------------
@pytest.fixture
def history(store, fake):
    """Two ingest runs, each tagged: v1 (A's first video), then v2 (a second video)."""
    first, second = fake.task("first"), fake.task("second")
    commit(store, [first], A, fake)
    tag1 = tag_ingest(store.db, datetime(2026, 1, 1, 2, 0, tzinfo=UTC))
    time.sleep(0.01)
    middle = datetime.now(UTC)
    time.sleep(0.01)
    commit(store, [second], A, fake)
    tag2 = tag_ingest(store.db, datetime(2026, 1, 2, 2, 0, tzinfo=UTC))
    return {"first": first, "second": second, "tags": (tag1, tag2), "middle": middle}


def _view(store, as_of):
    """(memories video ids, catalog video ids) as a store opened ``as_of`` reads them."""
    view = MemoryStore(store.cfg, as_of=as_of)
    memories = set(view.scan(None, ["video_id"]).column("video_id").to_pylist())
    videos = Catalog(view).all(["video_id"]).column("video_id").to_pylist()
    return memories, set(videos)


def test_each_ingest_tags_memories_and_videos_alike(store, history):
    tag1, tag2 = history["tags"]
    assert (tag1, tag2) == ("ingest-20260101T020000Z", "ingest-20260102T020000Z")
    for name in (MEMORIES, VIDEOS):
        tags = open_table(store.db, name).tags.list()
        assert {tag1, tag2} <= set(tags)
        assert tags[tag1]["version"] < tags[tag2]["version"]
    rows = version_rows(store.table)
    assert rows[0]["version"] == store.table.version and rows[0]["tags"] == tag2
    assert [r["version"] for r in rows] == sorted((r["version"] for r in rows), reverse=True)
    again = tag_ingest(store.db, datetime(2026, 1, 2, 2, 0, tzinfo=UTC))  # same second
    assert again == f"{tag2}-v{store.table.version}"


def test_as_of_a_tag_a_version_or_a_time_reads_both_tables_then(store, history):
    first, second = history["first"].video_id, history["second"].video_id
    tag1, _ = history["tags"]
    assert _view(store, tag1) == ({first}, {first})
    assert _view(store, history["middle"].isoformat()) == ({first}, {first})
    version = open_table(store.db, MEMORIES).tags.list()[tag1]["version"]
    # a version number: the catalog as it was before the next memories commit
    assert _view(store, str(version)) == ({first}, {first})
    assert _view(store, str(store.table.version)) == ({first, second}, {first, second})
    assert _view(store, datetime.now(UTC).isoformat()) == ({first, second}, {first, second})
    assert store.table.count_rows() == 4  # the store's own table is still the latest


@pytest.mark.parametrize(
    ("as_of", "message"),
    [
        ("999", "no version 999 of the memories table"),
        ("last-tuesday", "is not a version number, a tag"),
        ("2001-01-01T00:00:00", "has no version that old"),
    ],
)
def test_a_bad_as_of_is_one_clear_error(store, history, as_of, message):
    with pytest.raises(VersionError, match=message) as raised:
        resolve_as_of(store.table, as_of)
    assert "\n" not in str(raised.value)
    with pytest.raises(VersionError, match=message):
        AsOfConnection(store.db, as_of).open_table(MEMORIES)


def test_retiring_ingest_tags_keeps_the_newest_and_other_tags(store, history):
    tag1, tag2 = history["tags"]
    table = store.table
    table.tags.create("release-1", table.version)
    assert retire_ingest_tags(table, datetime.now(UTC) - timedelta(days=1)) == []  # all young
    assert retire_ingest_tags(table, datetime.now(UTC) + timedelta(seconds=1)) == [tag1]
    assert set(table.tags.list()) == {tag2, "release-1"}


def test_prune_drops_the_thumbnails_of_videos_no_encoder_holds_any_more(store, fake):
    from dataclasses import replace as with_

    from storage.thumbnails import ThumbnailStore

    both, only_a = [fake.task("v1")], [fake.task("v2")]
    commit(store, both + only_a, A, fake)
    commit(store, both, B, fake)
    thumbnails = ThumbnailStore(store.db)
    records = [r for t in both + only_a for r in fake.records(t, 2)]
    thumbnails.write([with_(r, thumbnail=b"jpeg") for r in records], {})
    assert thumbnails.get(only_a[0].video_id, 0) == b"jpeg"
    prune_encoder(store, A)
    assert thumbnails.get(both[0].video_id, 1) == b"jpeg"  # B still has its clips
    assert thumbnails.get(only_a[0].video_id, 0) is None
