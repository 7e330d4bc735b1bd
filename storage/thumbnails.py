"""The ``thumbnails`` table: one small JPEG per clip, key (video_id, clip_index).

Written by the ingest writer in the same commit step as the memories (before the catalog
row that makes them visible), pruned with the video when it leaves the archive, and read
by the service's ``/v1/clips/{video_id}/{clip_index}/thumbnail.jpg``. Thumbnails do not
depend on the encoder, so a video ingested by two encoders has one thumbnail per clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from schemas.records import MemoryRecord
from schemas.tables import THUMBNAIL_KEY, THUMBNAILS, THUMBNAILS_SCHEMA
from storage.db import chunks, delete_rows, delete_videos_from, in_list, open_table, sql_literal


class ThumbnailStore:
    """The thumbnails of one database (``db``: a LanceDB connection)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self._table: Any | None = None

    def table(self, create: bool = False) -> Any | None:
        if self._table is None:
            self._table = open_table(self.db, THUMBNAILS)
            if self._table is None and create:
                self._table = self.db.create_table(
                    THUMBNAILS, schema=THUMBNAILS_SCHEMA, exist_ok=True
                )
        return self._table

    def write(self, records: Sequence[MemoryRecord], n_clips: dict[str, int]) -> int:
        """Upsert the thumbnails the records carry (one commit), and drop any past the
        last clip of a video that came back shorter (``n_clips``: its clips now); returns
        the rows written."""
        rows = {(r.video_id, r.clip_index): r.thumbnail for r in records if r.thumbnail is not None}
        if not rows:
            return 0
        batch = pa.Table.from_pylist(
            [{"video_id": v, "clip_index": i, "jpeg": j} for (v, i), j in rows.items()],
            schema=THUMBNAILS_SCHEMA,
        )
        table: Any = self.table(create=True)
        ids = list({v for v, _ in rows})
        if any(table.count_rows(in_list("video_id", part)) for part in chunks(ids)):
            upsert = table.merge_insert(THUMBNAIL_KEY).when_matched_update_all()
            upsert.when_not_matched_insert_all().execute(batch)
            self.delete_stale(n_clips)
        else:  # none of these videos has a thumbnail yet: an append is much cheaper
            table.add(batch)
        return batch.num_rows

    def delete_videos(self, video_ids: Sequence[str]) -> int:
        """Drop every thumbnail of some videos; returns how many."""
        table = self.table()
        return 0 if table is None else delete_videos_from(table, video_ids)

    def delete_stale(self, n_clips: dict[str, int]) -> int:
        """Drop thumbnails of clips >= n of each video (it got shorter since last time)."""
        table = self.table()
        if table is None or not n_clips:
            return 0
        per_video = " OR ".join(
            f"(video_id = {sql_literal(v)} AND clip_index >= {int(n)})" for v, n in n_clips.items()
        )
        return delete_rows(table, f"{in_list('video_id', n_clips)} AND ({per_video})")

    def get(self, video_id: str, clip_index: int) -> bytes | None:
        """The JPEG of one clip, or None."""
        table = self.table()
        if table is None:
            return None
        where = f"video_id = {sql_literal(video_id)} AND clip_index = {int(clip_index)}"
        rows = table.search().where(where).select(["jpeg"]).limit(1).to_arrow()
        return rows.column("jpeg")[0].as_py() if rows.num_rows else None
