"""The ``videos`` table: the catalog and ingest ledger (one row per video, key video_id).

It is what makes a re-run cheap: a video whose size, etag and encoder have not changed
since it was ingested is skipped; a failed one is retried only when asked. It follows the
archive: a video gone from its source is marked ``deleted`` by the next run over that
source. Readers see the memories of ``done`` videos only (``DoneVideos``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.config import StorageConfig
from schemas.records import VideoOutcome, VideoTask
from schemas.tables import VIDEO_KEY, VIDEOS, VIDEOS_SCHEMA
from storage.db import chunks, connect, in_list, open_table, sql_literal
from storage.encoders import EncoderLedger
from storage.memories import MemoryStore

PLAN_LOOKUP_MAX = 5_000  # above this many listed videos, plan reads the catalog in one scan
DONE, DELETED = "done", "deleted"  # catalog statuses besides "failed"


class Catalog:
    """Reads and batched upserts of the ``videos`` table (created on first use).

    Built from a StorageConfig (own connection) or a MemoryStore (shares its connection)."""

    def __init__(self, source: StorageConfig | MemoryStore) -> None:
        if isinstance(source, MemoryStore):
            self.cfg, self.db = source.cfg, source.db
        else:
            self.cfg, self.db = source, connect(source)
        self._table: Any | None = None

    @property
    def table(self) -> Any:
        if self._table is None:
            self._table = open_table(self.db, VIDEOS) or self.db.create_table(
                VIDEOS, schema=VIDEOS_SCHEMA, exist_ok=True
            )
        return self._table

    def get(self, video_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Catalog rows by video_id (videos never seen are absent)."""
        rows: dict[str, dict[str, Any]] = {}
        for ids in chunks(list(dict.fromkeys(video_ids))):
            found = self.table.search().where(in_list("video_id", ids)).limit(None).to_arrow()
            rows.update({row["video_id"]: row for row in found.to_pylist()})
        return rows

    def all(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The whole catalog (or some of its columns)."""
        query = self.table.search().limit(None)
        if columns is not None:
            query = query.select(list(columns))
        return query.to_arrow()

    def record(self, outcomes: Sequence[VideoOutcome], encoder: str) -> int:
        """Write how a batch of videos ended in ONE merge-insert; returns rows written.

        ``attempts`` counts ingest tries of a video across runs; ``created_at`` is kept
        from the first try."""
        if not outcomes:
            return 0
        latest = {o.task.video_id: o for o in outcomes}  # one row per video: the last outcome
        previous = self.get(list(latest))
        now = datetime.now(UTC)
        rows = [_row(o, encoder, previous.get(vid), now) for vid, o in latest.items()]
        batch = pa.Table.from_pylist(rows, schema=VIDEOS_SCHEMA)
        (
            self.table.merge_insert(VIDEO_KEY)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(batch)
        )
        return batch.num_rows

    def mark_deleted(
        self, archive: str, listed: Sequence[VideoTask]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """Mark ``deleted`` the videos of ``archive`` that its listing ``listed`` no longer
        holds, in ONE merge-insert; returns (the rows marked now, the ids of every video of
        ``archive`` not listed, marked now or before: those whose memories must go).

        Call it only with a listing that succeeded. Videos under a folder the listing could
        not read (an entry with a ``problem`` and a uri ending in "/") are left alone. A
        deleted video that is listed again is planned and ingested again."""
        rows = (
            self.table.search()
            .where(f"archive = {sql_literal(archive)}")
            .limit(None)
            .to_arrow()
            .to_pylist()
        )
        present = {t.video_id for t in listed}
        unread = tuple(t.uri for t in listed if t.problem and t.uri.endswith("/"))
        gone = [r for r in rows if r["video_id"] not in present and not r["uri"].startswith(unread)]
        newly = [r for r in gone if r["status"] != DELETED]
        if newly:
            now = datetime.now(UTC)
            marked = [{**r, "status": DELETED, "error": None, "updated_at": now} for r in newly]
            batch = pa.Table.from_pylist(marked, schema=VIDEOS_SCHEMA)
            (
                self.table.merge_insert(VIDEO_KEY)
                .when_matched_update_all()
                .when_not_matched_insert_all()
                .execute(batch)
            )
        return newly, [r["video_id"] for r in gone]

    def plan(
        self, tasks: Sequence[VideoTask], encoder: str, retry_failed: bool = False
    ) -> tuple[list[VideoTask], list[VideoTask]]:
        """Split listed videos into (todo, skipped) against what the catalog already holds."""
        ids = [t.video_id for t in tasks]
        known = self._plan_rows(ids)
        # what THIS encoder made of each video, whichever encoder the catalog row names last
        entries = EncoderLedger(self.db).lookup(encoder, ids, known)
        todo: list[VideoTask] = []
        skipped: list[VideoTask] = []
        for task in tasks:
            vid = task.video_id
            settled = _is_settled(known.get(vid), entries.get(vid), task, retry_failed)
            (skipped if settled else todo).append(task)
        return todo, skipped

    def _plan_rows(self, video_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The columns plan needs; for a big listing one scan beats thousands of IN lookups."""
        if len(video_ids) <= PLAN_LOOKUP_MAX:
            return self.get(video_ids)
        wanted = set(video_ids)
        rows = self.all(["video_id", "size", "etag", "encoder", "status"]).to_pylist()
        return {row["video_id"]: row for row in rows if row["video_id"] in wanted}


def _is_settled(
    row: dict[str, Any] | None, entry: dict[str, Any] | None, task: VideoTask, retry_failed: bool
) -> bool:
    """True when this encoder already handled the video as it is now (``entry``: its ledger
    entry, same size and etag) and nothing is to do: done, while the catalog ``row`` still
    says done (whichever encoder ingested it last); or failed, with no retry asked."""
    if entry is None or entry["size"] != task.size or entry["etag"] != task.etag:
        return False
    if entry["status"] == "done":
        return row is not None and row["status"] == "done"
    return entry["status"] == "failed" and not retry_failed


def _row(
    outcome: VideoOutcome, encoder: str, previous: dict[str, Any] | None, now: datetime
) -> dict[str, Any]:
    task, probe = outcome.task, outcome.probe
    return {
        "video_id": task.video_id,
        "uri": task.uri,
        "archive": task.archive,
        "size": task.size,
        "etag": task.etag,
        "duration_s": probe.duration_s if probe else None,
        "fps": probe.fps if probe else None,
        "width": probe.width if probe else None,
        "height": probe.height if probe else None,
        "codec": probe.codec if probe else None,
        "status": outcome.status,
        "error": str(outcome.error) if outcome.error else None,
        "encoder": encoder,
        "n_clips": outcome.n_clips,
        "attempts": (previous["attempts"] or 0) + 1 if previous else 1,
        "recorded_at": task.modified_at,
        "tags": list(task.tags),
        "created_at": (previous or {}).get("created_at") or now,
        "updated_at": now,
    }


class DoneVideos:
    """The ids of the videos whose catalog row says ``done``: the only videos whose memories
    a reader may see. A video's memories are committed before its row says ``done`` and
    stay until the writer prunes them after its row says ``deleted``; filtering on this set
    hides both windows (and a writer killed inside one).

    The set is read again only when the ``videos`` table's version changed: one version
    check per call (a manifest look-up), one scan of two columns after each catalog commit."""

    def __init__(self, db: Any) -> None:
        self.db = db  # a MemoryStore's connection (an --as-of one reads the catalog then)
        self._table: Any | None = None
        self._version: int | None = None
        self._ids: frozenset[str] = frozenset()

    def ids(self) -> frozenset[str]:
        if self._table is None:
            self._table = open_table(self.db, VIDEOS)
            if self._table is None:
                return frozenset()  # nothing catalogued yet: nothing is visible
        version = self._table.version  # first: rows read below are at least this new
        if version != self._version:
            done = self._table.search().where(f"status = {sql_literal(DONE)}")
            rows = done.select(["video_id"]).limit(None).to_arrow()
            self._ids = frozenset(rows["video_id"].to_pylist())
            self._version = version
        return self._ids


def rows_of_videos(rows: pa.Table, video_ids: frozenset[str] | set[str]) -> pa.Table:
    """The rows of ``rows`` (which hold ``video_id``) whose video is in ``video_ids``, in
    their order. Python looks at each distinct video once, not at each row."""
    if rows.num_rows == 0:
        return rows
    ids = rows["video_id"].combine_chunks().dictionary_encode()
    names = ids.dictionary.to_pylist()
    allowed = np.fromiter((name in video_ids for name in names), dtype=bool, count=len(names))
    mask = allowed[ids.indices.to_numpy(zero_copy_only=False)]
    return rows if mask.all() else rows.filter(pa.array(mask))
