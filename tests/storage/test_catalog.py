from __future__ import annotations

from dataclasses import replace

import pyarrow as pa
import pytest

from schemas.records import StageError, VideoOutcome, VideoProbe
from storage.catalog import Catalog, DoneVideos, rows_of_videos
from storage.memories import MemoryStore

PROBE = VideoProbe(duration_s=12.5, fps=25.0, width=64, height=48, codec="h264")


@pytest.fixture
def catalog(store) -> Catalog:
    return Catalog(store)  # shares the store's connection


def done(task, n_clips=3):
    return VideoOutcome(task=task, status="done", n_clips=n_clips, probe=PROBE)


def failed(task):
    return VideoOutcome(task=task, status="failed", error=StageError("decode", "bad frame 7"))


def test_record_counts_attempts_and_keeps_created_at(catalog, fake):
    a, b = fake.task("a"), fake.task("b", tags=("x", "y"))
    assert catalog.record([done(a), failed(b)], fake.encoder) == 2
    first = catalog.get([a.video_id, b.video_id, "unknown"])
    assert set(first) == {a.video_id, b.video_id}
    assert first[a.video_id]["attempts"] == 1 and first[a.video_id]["n_clips"] == 3
    assert first[a.video_id]["codec"] == "h264" and first[a.video_id]["error"] is None
    assert first[b.video_id]["error"] == "decode: bad frame 7"
    assert first[b.video_id]["tags"] == ["x", "y"] and first[b.video_id]["duration_s"] is None

    catalog.record([done(b)], fake.encoder)  # the retry succeeds
    second = catalog.get([b.video_id])[b.video_id]
    assert second["attempts"] == 2 and second["status"] == "done" and second["error"] is None
    assert second["created_at"] == first[b.video_id]["created_at"]
    assert second["updated_at"] >= first[b.video_id]["updated_at"]
    assert catalog.all().num_rows == 2
    assert catalog.all(["video_id", "status"]).column_names == ["video_id", "status"]


@pytest.mark.parametrize("lookup_max", [5_000, 1], ids=["lookups", "one-scan"])
def test_plan_skips_only_settled_videos(catalog, fake, monkeypatch, lookup_max):
    monkeypatch.setattr("storage.catalog.PLAN_LOOKUP_MAX", lookup_max)
    ok, bad, fresh = fake.task("ok"), fake.task("bad"), fake.task("fresh")
    catalog.record([done(ok), failed(bad)], fake.encoder)

    todo, skipped = catalog.plan([ok, bad, fresh], fake.encoder, retry_failed=False)
    assert [t.video_id for t in skipped] == [ok.video_id, bad.video_id]
    assert [t.video_id for t in todo] == [fresh.video_id]

    todo, skipped = catalog.plan([ok, bad], fake.encoder, retry_failed=True)
    assert todo == [bad] and skipped == [ok]

    changed = replace(ok, etag="e2")
    resized = replace(ok, size=ok.size + 1)
    todo, _ = catalog.plan([changed, resized], fake.encoder)
    assert todo == [changed, resized]
    todo, skipped = catalog.plan([ok], "fake-enc@2")  # a new encoder re-encodes everything
    assert todo == [ok] and skipped == []


def test_catalog_from_config_is_the_same_table(catalog, local_cfg, fake):
    catalog.record([done(fake.task("a"))], fake.encoder)
    assert Catalog(local_cfg).all().num_rows == 1


def _status(catalog, task) -> str:
    return catalog.get([task.video_id])[task.video_id]["status"]


def test_mark_deleted_marks_only_unlisted_videos_of_this_archive(catalog, fake):
    kept, gone, failed_gone = fake.task("kept"), fake.task("gone"), fake.task("broken")
    other = fake.task("other", archive="sport")
    catalog.record([done(kept), done(gone), failed(failed_gone), done(other)], fake.encoder)

    marked, unlisted = catalog.mark_deleted("news", [kept])
    assert sorted(r["video_id"] for r in marked) == sorted([gone.video_id, failed_gone.video_id])
    assert sorted(unlisted) == sorted([gone.video_id, failed_gone.video_id])
    assert _status(catalog, gone) == "deleted" and _status(catalog, failed_gone) == "deleted"
    assert _status(catalog, kept) == "done" and _status(catalog, other) == "done"
    row = catalog.get([gone.video_id])[gone.video_id]
    assert row["uri"] == gone.uri and row["n_clips"] == 3  # the row is kept, only its status
    assert catalog.all().num_rows == 4

    marked, unlisted = catalog.mark_deleted("news", [kept])  # again: nothing new to mark
    assert marked == [] and sorted(unlisted) == sorted([gone.video_id, failed_gone.video_id])

    todo, skipped = catalog.plan([kept, gone], fake.encoder)  # it came back: ingest it again
    assert todo == [gone] and skipped == [kept]


def test_mark_deleted_spares_videos_under_a_folder_it_could_not_list(catalog, fake):
    inside, outside = fake.task("locked/a"), fake.task("b")
    catalog.record([done(inside), done(outside)], fake.encoder)
    unreadable = replace(fake.task("x"), uri="/archive/locked/", video_id="", problem="denied")
    marked, _ = catalog.mark_deleted("news", [unreadable])
    assert [r["video_id"] for r in marked] == [outside.video_id]
    assert _status(catalog, inside) == "done"


def test_done_videos_follow_the_catalog_of_another_connection(catalog, local_cfg, fake):
    a, b = fake.task("a"), fake.task("b")
    visible = DoneVideos(MemoryStore(local_cfg).db)  # a reader with its own connection
    assert visible.ids() == frozenset()  # no catalog yet
    catalog.record([done(a), failed(b)], fake.encoder)
    first = visible.ids()
    assert first == {a.video_id}
    assert visible.ids() is first  # unchanged version: not read again
    catalog.record([done(b)], fake.encoder)
    assert visible.ids() == {a.video_id, b.video_id}
    catalog.mark_deleted("news", [b])
    assert visible.ids() == {b.video_id}


def test_rows_of_videos_keeps_order_and_only_the_given_videos():
    rows = pa.table({"video_id": ["a", "b", "a", "c", "b"], "n": [1, 2, 3, 4, 5]})
    assert rows_of_videos(rows, frozenset({"a", "c"}))["n"].to_pylist() == [1, 3, 4]
    assert rows_of_videos(rows, frozenset({"a", "b", "c"})) is rows
    assert rows_of_videos(rows, frozenset()).num_rows == 0


def test_delete_videos_drops_every_encoder_s_clips(store, fake):
    a, b = fake.task("a"), fake.task("b")
    meta = {a.video_id: a, b.video_id: b}
    store.write_memories(fake.records(a, 3) + fake.records(b, 2), fake.encoder, meta)
    store.write_memories(fake.records(a, 2), "fake-enc@2", meta)
    assert store.delete_videos([a.video_id, "unknown"]) == 5
    assert store.table.count_rows() == 2
    assert store.delete_videos([a.video_id]) == 0
