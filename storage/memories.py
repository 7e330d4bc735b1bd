"""The ``memories`` table: idempotent batched writes, filtered ANN search, memory fetches.

Writes are one merge-insert per batch on (video_id, clip_index, encoder): a re-run
overwrites what it wrote before instead of adding rows. Merge-inserts of the same new keys
from two processes can still duplicate rows, so every writer goes through ``writer_lock``."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import Bitmap, BTree, IvfPq, LabelList

from schemas.config import StorageConfig
from schemas.records import MemoryRecord, VideoTask
from schemas.tables import MEMORIES, MEMORY_KEY, memories_schema
from storage.db import (
    StorageError,
    chunks,
    connect,
    delete_rows,
    delete_videos_from,
    in_list,
    open_table,
    sql_literal,
)
from storage.quantize import dequantize_tokens, quantize_tokens
from storage.versions import AsOfConnection

log = logging.getLogger(__name__)


IVF_MIN_ROWS = 10_000  # below this a flat (exact) search is fast enough and PQ trains badly
# the archive keys' IVF_PQ, chosen from measurements at 1M clips (BENCHMARKS.md, "Selection
# at scale"): 2-d sub-vectors of 4-bit codes build in seconds, and 40 probes with 320 rows
# re-ranked exactly find the exact top 10 (recall@10 >= 0.99; the top 6 videos of 64 hits:
# 1.0) in under a third of the time of a tuned IVF_PQ over the 512-d token indicators
PQ_DIMS, PQ_BITS = 2, 4
NPROBES = 40  # IVF partitions searched per query
RERANK_ROWS = 320  # PQ candidates re-ranked by their exact keys, at least, per query
MEMORY_COLUMNS = ["memory", "memory_scale"]
# optimize() also drops versions older than 7 days by default, and fails when a tagged one
# is among them: version clean-up is the maintenance flow's job (storage.keep_versions_days)
KEEP_EVERY_VERSION = timedelta(days=365 * 100)
COMPACT_FRAGMENTS = 16  # small fragments (one or two per commit) that trigger a compaction
ENCODER_CHECK_S = 30.0  # how long ``holds_only``'s answer is trusted
# the scalar index of each column a question's WHERE (or the encoder scope) filters on
SCALAR_INDEXES = {
    "video_id": BTree,
    "encoder": Bitmap,
    "archive": Bitmap,
    "recorded_at": BTree,
    "tags": LabelList,
}


def encoder_scope(encoder: str, where: str | None = None) -> str:
    """The SQL predicate of one encoder's rows (the table holds every model's memories),
    within ``where`` when given."""
    own = f"encoder = {sql_literal(encoder)}"
    return f"({where}) AND {own}" if where else own


class MemoryStore:
    """The ``memories`` table of one database: one row per clip."""

    def __init__(
        self,
        cfg: StorageConfig,
        db: lancedb.DBConnection | None = None,
        as_of: str | None = None,
    ) -> None:
        """``as_of``: read every table of this database as of that version, tag or time
        (read-only; storage.versions)."""
        self.cfg = cfg
        self.db: Any = db if db is not None else connect(cfg)
        if as_of is not None:
            self.db = AsOfConnection(self.db, as_of)
        self._table: Any | None = None
        self._key_width: int | None = None
        self._only: tuple[str, bool, float] | None = None  # (encoder, holds only it, when)

    @property
    def key_width(self) -> int:
        """Floats per archive key (fixed by the schema: read once per store)."""
        if self._key_width is None:
            self._key_width = self.table.schema.field("archive_key").type.list_size
        return self._key_width

    @property
    def table(self) -> Any:
        if self._table is None:
            self._table = open_table(self.db, MEMORIES)
            if self._table is None:
                raise StorageError(f"no {MEMORIES} table in {self.cfg.db}: ingest videos first")
        return self._table

    def open_table(self, name: str) -> Any:
        """Any table of the same database (the SQL compiler also reads ``videos``)."""
        if name == MEMORIES:
            return self.table
        table = open_table(self.db, name)
        if table is None:
            raise StorageError(f"no {name} table in {self.cfg.db}: ingest videos first")
        return table

    def ensure_memories(self, key_width: int, memory_tokens: int, hidden: int) -> None:
        """Create ``memories`` for an encoder with archive keys of ``key_width`` floats and
        (M, D) memories, or check that the existing one fits."""
        want = memories_schema(key_width, memory_tokens, hidden)
        table = open_table(self.db, MEMORIES)
        if table is None:
            table = self.db.create_table(MEMORIES, schema=want, exist_ok=True)
        _check_dims(table.schema, want, self.cfg.db)
        self._table, self._key_width = table, None

    def write_memories(
        self, records: list[MemoryRecord], encoder: str, meta: dict[str, VideoTask]
    ) -> int:
        """Upsert the clips of a batch of videos in one commit; returns rows.

        Videos with no row of this encoder yet (every video of a first ingest) are appended:
        a merge-insert joins against the whole table, 0.4 s per commit at 1M rows and
        growing with it, where an append costs 0.04 s. One index-served count decides."""
        if not records:
            return 0
        unique = {(r.video_id, r.clip_index): r for r in records}  # last write of a key wins
        batch = _memory_batch(list(unique.values()), encoder, meta, self.table.schema)
        if not self._holds_any([r.video_id for r in records], encoder):
            self.table.add(batch)
            return batch.num_rows
        (
            self.table.merge_insert(MEMORY_KEY)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(batch)
        )
        return batch.num_rows

    def _holds_any(self, video_ids: Sequence[str], encoder: str) -> bool:
        """Whether any of these videos has a row of ``encoder``."""
        return any(
            self.table.count_rows(encoder_scope(encoder, in_list("video_id", ids)))
            for ids in chunks(list(dict.fromkeys(video_ids)))
        )

    def delete_stale_clips(self, n_clips: dict[str, int], encoder: str) -> int:
        """Drop clips >= n of each video (it changed and got shorter since last time).

        One count, and one delete commit only when something is stale (the common case
        commits nothing: each commit is a round trip on object storage)."""
        if not n_clips:
            return 0
        per_video = " OR ".join(
            f"(video_id = {sql_literal(v)} AND clip_index >= {int(n)})" for v, n in n_clips.items()
        )
        # the IN list first: the video_id index narrows the rows the OR terms are tried on
        # (16 ms instead of 120 ms for 256 videos at 1M rows)
        predicate = f"{in_list('video_id', n_clips)} AND {encoder_scope(encoder, per_video)}"
        return delete_rows(self.table, predicate)

    def delete_videos(self, video_ids: Sequence[str]) -> int:
        """Drop every clip (of every encoder) of some videos; returns the clips dropped. A
        count first, and a delete commit only when there is something to drop."""
        return delete_videos_from(self.table, video_ids)

    def search(
        self,
        vectors: np.ndarray,
        where: str | None = None,
        limit: int = 10,
        columns: Sequence[str] = ("video_id", "clip_index"),
        nprobes: int = NPROBES,
        refine_factor: int | None = None,
    ) -> pa.Table:
        """Cosine search of (B, W) query vectors over the archive keys, WHERE as a pre-filter.

        Returns ``query_index``, the requested columns and ``score = 1 - cosine distance``,
        ``limit`` rows per query. Only the named columns are read (never the tokens unless
        asked: on object storage that is the difference between 50 ms and seconds). With the
        ANN index, ``nprobes`` IVF partitions are searched and ``limit * refine_factor`` PQ
        candidates re-ranked by their exact keys (None: enough for ``RERANK_ROWS``); below it
        the search is exact."""
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]  # (1, W)
        width = self.key_width
        if queries.shape[1] != width:
            raise StorageError(
                f"{MEMORIES} table in {self.cfg.db} holds archive keys of {width} values, but "
                f"this model searches with {queries.shape[1]}: another model wrote it (use "
                "that model's --model, or ingest again into another --db)"
            )
        wanted = [c for c in columns if c not in ("score", "query_index")]
        query = (
            self.table.search(queries, vector_column_name="archive_key")
            .distance_type("cosine")
            .nprobes(int(nprobes))
            .refine_factor(int(refine_factor or -(-RERANK_ROWS // max(1, int(limit)))))
            .limit(int(limit))
            .select([*wanted, "_distance"])
        )
        if where:
            query = query.where(where, prefilter=True)
        result = query.to_arrow()
        if "query_index" not in result.column_names:
            zeros = pa.array(np.zeros(result.num_rows, dtype=np.int32))
            result = result.add_column(0, "query_index", zeros)
        score = pc.subtract(pa.scalar(1.0, pa.float32()), result["_distance"])
        return result.drop_columns(["_distance"]).append_column("score", score)

    def scan(self, where: str | None, columns: Sequence[str], limit: int | None = None) -> pa.Table:
        """A filtered read of some columns (no vector search); all matching rows by default."""
        query = self.table.search().select(list(columns)).limit(limit)
        return (query.where(where) if where else query).to_arrow()

    def clips_of(
        self, video_ids: Sequence[str], where: str | None, columns: Sequence[str]
    ) -> pa.Table:
        """The clips of some videos (that match ``where``), sorted by (video_id, clip_index).

        ``video_id IN (...)`` is what the BTREE index serves: one scan per 500 videos."""
        fetch = list(dict.fromkeys(["video_id", "clip_index", *columns]))
        within = f"({where}) AND " if where else ""
        parts = [
            self.scan(f"{within}{in_list('video_id', ids)}", fetch)
            for ids in chunks(list(dict.fromkeys(video_ids)))
        ]
        if not parts:
            return self.table.schema.empty_table().select(fetch)
        table = pa.concat_tables(parts)
        return table.sort_by([("video_id", "ascending"), ("clip_index", "ascending")])

    def fetch_memories(
        self, keys: Sequence[tuple[str, int]], encoder: str
    ) -> dict[tuple[str, int], np.ndarray]:
        """Dequantised (M, D) memories of some clips; keys that are not stored are absent."""
        wanted = {(video_id, int(clip_index)) for video_id, clip_index in keys}
        if not wanted:
            return {}
        clips = in_list("clip_index", sorted({clip for _, clip in wanted}))
        rows = self.clips_of([v for v, _ in wanted], encoder_scope(encoder, clips), MEMORY_COLUMNS)
        memories = memory_array(rows)  # (N, M, D)
        found = zip(rows["video_id"].to_pylist(), rows["clip_index"].to_pylist(), strict=True)
        return {key: memories[i] for i, key in enumerate(found) if key in wanted}

    def create_indexes(self, min_rows: int = IVF_MIN_ROWS) -> list[str]:
        """Best effort: a scalar index on every column questions filter on, and IVF_PQ
        (cosine, ``PQ_DIMS``-d sub-vectors) on the archive keys once the table has
        ``min_rows`` rows. A table of ``COMPACT_FRAGMENTS`` small fragments or more (a large
        ingest commits many) is compacted first, so indexes are built over few fragments;
        otherwise, once the indexes exist, ``optimize`` folds new rows into every index
        (until then new rows are searched exactly, beside the index). Returns what was
        done; failures are logged."""
        table = self.table
        if table.count_rows() == 0:
            return []
        done = []
        try:
            small = table.stats()["fragment_stats"]["num_small_fragments"]
            if small >= COMPACT_FRAGMENTS:  # also folds new rows into the existing indexes
                table.optimize(cleanup_older_than=KEEP_EVERY_VERSION)
                done.append(f"compact ({small} small fragments)")
            existing = {tuple(ix.columns): ix.name for ix in table.list_indices()}
            built = []
            for column, kind in SCALAR_INDEXES.items():
                if (column,) not in existing:
                    table.create_index(column, config=kind())
                    built.append(f"index {column}")
            if ("archive_key",) not in existing and table.count_rows() >= min_rows:
                config = IvfPq(
                    distance_type="cosine",
                    num_sub_vectors=self.key_width // PQ_DIMS,
                    num_bits=PQ_BITS,
                )
                table.create_index("archive_key", config=config)
                built.append("index archive_key")
            done += built
            if not done:  # every index exists: fold in the rows added since
                stats = table.index_stats(existing[("video_id",)])
                if stats is not None and stats.num_unindexed_rows > 0:
                    table.optimize(cleanup_older_than=KEEP_EVERY_VERSION)
                    done.append(f"optimize ({stats.num_unindexed_rows} new rows indexed)")
        except Exception as exc:  # noqa: BLE001 - an index is an optimisation only
            log.warning("could not refresh the indexes of %s: %s", self.cfg.db, exc)
        return done

    def holds_only(self, encoder: str) -> bool:
        """Whether every stored clip is ``encoder``'s (the BITMAP index answers; the answer
        is kept ``ENCODER_CHECK_S``). The archive stage then searches without the encoder
        predicate, a pre-filter that costs more than the search itself at 1M clips."""
        now = time.monotonic()
        if self._only is None or self._only[0] != encoder or now - self._only[2] > ENCODER_CHECK_S:
            others = self.table.count_rows(f"encoder != {sql_literal(encoder)}")
            self._only = (encoder, others == 0, now)
        return self._only[1]

    def count(self, table: str = MEMORIES) -> int:
        """Rows in a table of this database (0 when it does not exist)."""
        handle = open_table(self.db, table)
        return 0 if handle is None else handle.count_rows()


def _check_dims(have: pa.Schema, want: pa.Schema, db: str) -> None:
    problems = []
    for name in ("archive_key", "memory", "memory_scale"):
        if name not in have.names:
            problems.append(f"column {name} is missing")
            continue
        got, need = have.field(name).type.list_size, want.field(name).type.list_size
        if got != need:
            problems.append(f"{name} has {got} values per row, the encoder needs {need}")
    if problems:
        raise StorageError(
            f"{MEMORIES} table in {db} does not fit this encoder: {'; '.join(problems)} "
            "(use another --db or the encoder that wrote it)"
        )


def _memory_batch(
    records: list[MemoryRecord], encoder: str, meta: dict[str, VideoTask], schema: pa.Schema
) -> pa.Table:
    width = schema.field("archive_key").type.list_size
    m = schema.field("memory_scale").type.list_size
    md = schema.field("memory").type.list_size
    missing = sorted({r.video_id for r in records} - meta.keys())
    if missing:
        raise StorageError(f"no VideoTask given for videos {missing[:5]}")
    keys = np.stack([np.asarray(r.archive_key, np.float32).reshape(-1) for r in records])
    memories = [np.asarray(r.memory, np.float32) for r in records]
    bad = next((mem.shape for mem in memories if mem.shape != (m, md // m)), None)
    if keys.shape[1] != width or bad is not None:
        raise StorageError(
            f"records do not fit the {MEMORIES} table: archive key width {keys.shape[1]} "
            f"(table {width}), memory {bad or memories[0].shape} (table {(m, md // m)})"
        )
    quantised = [quantize_tokens(mem) for mem in memories]
    tokens = np.concatenate([q for q, _ in quantised])  # (N*M*D,) int8
    scales = np.concatenate([s for _, s in quantised])  # (N*M,) float32
    tasks = [meta[r.video_id] for r in records]
    columns = {
        "video_id": [r.video_id for r in records],
        "clip_index": [int(r.clip_index) for r in records],
        "encoder": [encoder] * len(records),
        "uri": [t.uri for t in tasks],
        "t_start": [float(r.t_start) for r in records],
        "t_end": [float(r.t_end) for r in records],
        "archive_key": pa.FixedSizeListArray.from_arrays(pa.array(keys.reshape(-1)), width),
        "memory": pa.FixedSizeListArray.from_arrays(pa.array(tokens), md),
        "memory_scale": pa.FixedSizeListArray.from_arrays(pa.array(scales), m),
        "archive": [t.archive for t in tasks],
        "recorded_at": [t.modified_at for t in tasks],
        "tags": [list(t.tags) for t in tasks],
    }
    arrays = [
        pa.array(columns[f.name], type=f.type)
        if f.name in columns
        else pa.nulls(len(records), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def memory_array(rows: pa.Table) -> np.ndarray:
    """The dequantised memories of rows holding ``memory`` and ``memory_scale``: (N, M, D)."""
    m = rows.schema.field("memory_scale").type.list_size
    n = rows.num_rows
    if n == 0:
        return np.zeros((0, m, 0), dtype=np.float32)
    tokens = rows["memory"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    scales = rows["memory_scale"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return dequantize_tokens(tokens.reshape(n, m, -1), scales.reshape(n, m, 1))
