"""The single writer of an ingest run: batched, idempotent commits of memories + catalog.

Memories of a video are committed before its catalog row says ``done``; both are
merge-inserts on their keys. A run killed at any point and run again re-encodes only the
videos not yet ``done`` and rewrites the same keys: nothing lost, nothing duplicated.

It is a plain object on the ingest driver. What keeps it the only writer of its database
is the writer lease (``storage.lease``) the ingest flow holds for the whole run: each commit
goes through ``writer_lock``, which checks the lease is still this run's (LeaseLost when it
expired or was taken over) before writing.
"""

from __future__ import annotations

from schemas.config import StorageConfig
from schemas.records import MemoryRecord, VideoOutcome, VideoTask
from storage.catalog import Catalog
from storage.db import writer_lock
from storage.encoders import EncoderLedger
from storage.memories import MemoryStore
from storage.thumbnails import ThumbnailStore


class MemoryWriter:
    """Buffers finished videos and commits them ``commit_videos`` at a time."""

    def __init__(self, cfg: StorageConfig, encoder: str, dims: tuple[int, int, int]):
        self.cfg, self.encoder = cfg, encoder
        self.store = MemoryStore(cfg)
        self.store.ensure_memories(*dims)
        self.catalog = Catalog(self.store)
        self.ledger = EncoderLedger(self.store.db)  # per-encoder state (storage.encoders)
        self.thumbnails = ThumbnailStore(self.store.db)  # one JPEG per clip, any encoder
        self._outcomes: list[VideoOutcome] = []
        self._records: list[MemoryRecord] = []
        self.commits = 0

    def add(self, outcome: VideoOutcome, records: list[MemoryRecord]) -> None:
        """Take one finished video; commit when the buffer is full."""
        self._outcomes.append(outcome)
        self._records.extend(records)
        if len(self._outcomes) >= self.cfg.commit_videos:
            self.flush()

    def flush(self) -> None:
        """Commit what is buffered: memories first, then the catalog rows."""
        if not self._outcomes:
            return
        tasks = {o.task.video_id: o.task for o in self._outcomes}
        with writer_lock(self.cfg):
            if self._records:
                self.store.write_memories(self._records, self.encoder, tasks)
            done = {o.task.video_id: o.n_clips for o in self._outcomes if o.status == "done"}
            self.store.delete_stale_clips(done, self.encoder)
            self.thumbnails.write(self._records, done)  # beside the memories, before the catalog
            self.catalog.record(self._outcomes, self.encoder)
            # last: a ledger entry says "this encoder need not run again", so only once the
            # memories and the catalog row it vouches for are committed
            self.ledger.record(self._outcomes, self.encoder)
        self.commits += 1
        self._outcomes, self._records = [], []

    def follow_deletions(self, archive: str, listed: list[VideoTask]) -> list[str]:
        """The catalog follows the archive: videos of ``archive`` that a successful listing
        ``listed`` no longer holds are marked ``deleted`` (catalog rows kept), then their
        memories (every encoder's) and their encoder-ledger entries are pruned. The catalog
        commit comes first, so readers stop seeing the memories at once; a run killed before
        the prune prunes on the next run. Returns the uris marked deleted now."""
        with writer_lock(self.cfg):
            marked, gone = self.catalog.mark_deleted(archive, listed)
            if gone:
                self.store.delete_videos(gone)
                self.thumbnails.delete_videos(gone)
                self.ledger.forget_videos(gone)
        return [row["uri"] for row in marked]
