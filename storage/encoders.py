"""Encoders side by side: the per-encoder ledger, a summary per encoder, and pruning one.

The ``memories`` table holds every model's clips (key video_id, clip_index, encoder). The
``video_encoders`` ledger records, per (video, encoder), the size and etag the encoder saw
and how the video ended, so that switching back to an earlier encoder re-encodes only the
videos that changed since it last ran (``Catalog.plan`` reads it). The catalog row keeps
the latest encoder that ingested a video; the ledger keeps them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from schemas.records import VideoOutcome
from schemas.tables import VIDEO_ENCODER_KEY, VIDEO_ENCODERS, VIDEO_ENCODERS_SCHEMA, VIDEOS
from storage.db import (
    StorageError,
    chunks,
    delete_rows,
    delete_videos_from,
    in_list,
    open_table,
    sql_literal,
    writer_lock,
)
from storage.memories import MemoryStore
from storage.thumbnails import ThumbnailStore

LEDGER_COLUMNS = [f.name for f in VIDEO_ENCODERS_SCHEMA]
LOOKUP_MAX = 5_000  # above this many videos, a lookup reads the encoder's rows in one scan


class EncoderLedger:
    """The ``video_encoders`` table of a store's database (created by the first write)."""

    def __init__(self, db: Any) -> None:
        self.db = db  # the LanceDB connection (a MemoryStore's or a Catalog's)
        self._table: Any | None = None

    def _open(self) -> Any | None:
        if self._table is None:
            self._table = open_table(self.db, VIDEO_ENCODERS)
        return self._table

    @property
    def table(self) -> Any:
        """The ledger, created on first use and seeded from the catalog: a database
        ingested before the ledger existed keeps each video's latest encoder settled."""
        table = self._open()
        if table is None:
            table = self.db.create_table(VIDEO_ENCODERS, schema=VIDEO_ENCODERS_SCHEMA)
            seed = _catalog_entries(self.db)
            if seed.num_rows:
                _merge(table, seed)
            self._table = table
        return table

    def record(self, outcomes: Sequence[VideoOutcome], encoder: str) -> int:
        """How a batch of videos ended for ``encoder``, in ONE merge-insert; rows written."""
        if not outcomes:
            return 0
        now = datetime.now(UTC)
        latest = {o.task.video_id: o for o in outcomes}
        rows = [
            {
                "video_id": vid,
                "encoder": encoder,
                "size": o.task.size,
                "etag": o.task.etag,
                "status": o.status,
                "n_clips": o.n_clips,
                "updated_at": now,
            }
            for vid, o in latest.items()
        ]
        return _merge(self.table, pa.Table.from_pylist(rows, schema=VIDEO_ENCODERS_SCHEMA))

    def lookup(
        self, encoder: str, video_ids: Sequence[str], catalog_rows: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any]]:
        """``encoder``'s entries of some videos. Without a ledger yet (a database from before
        it), the catalog rows that name ``encoder`` stand in, as the seed would."""
        table = self._open()
        if table is None:
            return {v: r for v, r in catalog_rows.items() if r.get("encoder") == encoder}
        own = f"encoder = {sql_literal(encoder)}"
        wanted = list(dict.fromkeys(video_ids))
        if len(wanted) > LOOKUP_MAX:  # one scan of this encoder's rows beats many IN lists
            found = table.search().where(own).select(LEDGER_COLUMNS).limit(None).to_arrow()
            keep = set(wanted)
            return {r["video_id"]: r for r in found.to_pylist() if r["video_id"] in keep}
        rows: dict[str, dict[str, Any]] = {}
        for ids in chunks(wanted):
            query = table.search().where(f"{own} AND {in_list('video_id', ids)}")
            found = query.select(LEDGER_COLUMNS).limit(None).to_arrow()
            rows.update({r["video_id"]: r for r in found.to_pylist()})
        return rows

    def per_encoder(self) -> dict[str, dict[str, Any]]:
        """Per encoder: videos it ended ``failed`` and when it last ingested anything."""
        table = self._open()
        if table is None:
            return {}
        rows = table.search().select(["encoder", "status", "updated_at"]).limit(None).to_arrow()
        out: dict[str, dict[str, Any]] = {}
        for row in rows.to_pylist():
            entry = out.setdefault(row["encoder"], {"failed": 0, "updated_at": None})
            entry["failed"] += row["status"] == "failed"
            if entry["updated_at"] is None or row["updated_at"] > entry["updated_at"]:
                entry["updated_at"] = row["updated_at"]
        return out

    def forget(self, encoder: str) -> int:
        """Delete ``encoder``'s entries (its videos will be encoded again if it comes back)."""
        table = self._open()
        if table is None:  # create (and seed) it first, or the catalog would stand in
            table = self.table
        return delete_rows(table, f"encoder = {sql_literal(encoder)}")

    def forget_videos(self, video_ids: list[str]) -> int:
        """Delete every encoder's entries of some videos: if one comes back, each encoder has
        to encode it again (its memories were pruned)."""
        return delete_videos_from(self.table, video_ids)


def _merge(table: Any, batch: pa.Table) -> int:
    (
        table.merge_insert(VIDEO_ENCODER_KEY)
        .when_matched_update_all()
        .when_not_matched_insert_all()
        .execute(batch)
    )
    return batch.num_rows


def _catalog_entries(db: Any) -> pa.Table:
    """The catalog's rows as ledger entries of their (latest) encoder."""
    videos = open_table(db, VIDEOS)
    if videos is None:
        return VIDEO_ENCODERS_SCHEMA.empty_table()
    rows = videos.search().select(LEDGER_COLUMNS).limit(None).to_arrow()
    rows = rows.filter(pc.is_valid(rows["encoder"]))
    return rows.select(LEDGER_COLUMNS).cast(VIDEO_ENCODERS_SCHEMA)


def bytes_per_clip(schema: pa.Schema) -> int:
    """Bytes of one clip's fixed-width memory columns: the archive key (float32), the int8
    tokens and their float32 scales. Metadata, index and file overhead are not counted."""
    key = schema.field("archive_key").type.list_size * 4
    tokens = schema.field("memory").type.list_size
    scales = schema.field("memory_scale").type.list_size * 4
    return key + tokens + scales


def encoder_summary(store: MemoryStore) -> list[dict[str, Any]]:
    """One row per encoder found in ``memories`` or the ledger: its videos and clips (from
    the stored clips), estimated bytes (clips x ``bytes_per_clip``), failed videos and the
    last time it ingested (from the ledger). Reads two string columns of every clip."""
    table = store.table
    clips = table.search().select(["encoder", "video_id"]).limit(None).to_arrow()
    counts = clips.group_by("encoder").aggregate(
        [("video_id", "count"), ("video_id", "count_distinct")]
    )
    per_clip = bytes_per_clip(table.schema)
    ledger = EncoderLedger(store.db).per_encoder()
    rows = {}
    for row in counts.to_pylist():
        n = row["video_id_count"]
        rows[row["encoder"]] = {"videos": row["video_id_count_distinct"], "clips": n}
    for encoder in ledger.keys() - rows.keys():  # ingested, but every video failed (or none)
        rows[encoder] = {"videos": 0, "clips": 0}
    return [
        {
            "encoder": encoder,
            **counts_,
            "bytes": counts_["clips"] * per_clip,
            "failed": ledger.get(encoder, {}).get("failed", 0),
            "last_ingest": ledger.get(encoder, {}).get("updated_at"),
        }
        for encoder, counts_ in sorted(rows.items())
    ]


def prune_encoder(store: MemoryStore, encoder: str) -> tuple[int, int]:
    """Delete ``encoder``'s clips and ledger entries under the writer lock; returns (clips,
    ledger rows) removed. The space comes back when ``vmem maintain`` compacts and cleans
    up old versions. Raises StorageError when the database holds nothing of ``encoder``."""
    predicate = f"encoder = {sql_literal(encoder)}"
    ledger = EncoderLedger(store.db)
    with writer_lock(store.cfg):
        clips = store.table.count_rows(predicate)
        known = ledger.per_encoder()
        if not clips and encoder not in known:
            raise StorageError(
                f"no encoder {encoder!r} in {store.cfg.db} (vmem encoders lists them)"
            )
        if clips:
            held = set(store.scan(predicate, ["video_id"]).column("video_id").to_pylist())
            store.table.delete(predicate)
            _drop_orphan_thumbnails(store, held)
        return clips, ledger.forget(encoder)


def _drop_orphan_thumbnails(store: MemoryStore, video_ids: set[str]) -> None:
    """Thumbnails belong to no encoder: those of videos left with no clip of any encoder
    after a prune go too."""
    kept: set[str] = set()
    for ids in chunks(sorted(video_ids)):
        rows = store.scan(in_list("video_id", ids), ["video_id"])
        kept.update(rows.column("video_id").to_pylist())
    ThumbnailStore(store.db).delete_videos(sorted(video_ids - kept))
