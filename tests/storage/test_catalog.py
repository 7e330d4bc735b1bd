from __future__ import annotations

from dataclasses import replace

import pytest

from schemas.records import StageError, VideoOutcome, VideoProbe
from storage.catalog import Catalog

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
