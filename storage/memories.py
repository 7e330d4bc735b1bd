"""The ``memories`` table: idempotent batched writes, filtered ANN search, memory fetches.

Writes are one merge-insert per batch on (video_id, clip_index, encoder): a re-run
overwrites what it wrote before instead of adding rows. Merge-inserts of the same new keys
from two processes can still duplicate rows, so every writer goes through ``writer_lock``."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import IvfPq

from schemas.config import StorageConfig
from schemas.records import MemoryRecord, VideoTask
from schemas.tables import MEMORIES, MEMORY_KEY, memories_schema
from storage.db import StorageError, chunks, connect, in_list, open_table, sql_literal
from storage.quantize import dequantize_tokens, quantize_tokens

log = logging.getLogger(__name__)


IVF_MIN_ROWS = 10_000  # below this a flat (exact) search is fast enough and PQ trains badly


def encoder_scope(encoder: str, where: str | None = None) -> str:
    """The SQL predicate of one encoder's rows (the table holds every model's memories),
    within ``where`` when given."""
    own = f"encoder = {sql_literal(encoder)}"
    return f"({where}) AND {own}" if where else own


class MemoryStore:
    """The ``memories`` table of one database: one row per clip."""

    def __init__(self, cfg: StorageConfig, db: lancedb.DBConnection | None = None) -> None:
        self.cfg = cfg
        self.db = db if db is not None else connect(cfg)
        self._table: Any | None = None
        self._indicator_width: int | None = None

    @property
    def indicator_width(self) -> int:
        """Floats per stored indicator (fixed by the schema: read once per store)."""
        if self._indicator_width is None:
            self._indicator_width = self.table.schema.field("indicator").type.list_size
        return self._indicator_width

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

    def ensure_memories(self, indicator_dim: int, memory_tokens: int, hidden: int) -> None:
        """Create ``memories`` for a (Q, M, D) encoder, or check that the existing one fits."""
        want = memories_schema(indicator_dim, memory_tokens, hidden)
        table = open_table(self.db, MEMORIES)
        if table is None:
            table = self.db.create_table(MEMORIES, schema=want, exist_ok=True)
        _check_dims(table.schema, want, self.cfg.db)
        self._table, self._indicator_width = table, None

    def write_memories(
        self, records: list[MemoryRecord], encoder: str, meta: dict[str, VideoTask]
    ) -> int:
        """Upsert the clips of a batch of videos in ONE merge-insert (one commit); returns rows."""
        if not records:
            return 0
        unique = {(r.video_id, r.clip_index): r for r in records}  # last write of a key wins
        batch = _memory_batch(list(unique.values()), encoder, meta, self.table.schema)
        (
            self.table.merge_insert(MEMORY_KEY)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(batch)
        )
        return batch.num_rows

    def delete_stale_clips(self, n_clips: dict[str, int], encoder: str) -> int:
        """Drop clips >= n of each video (it changed and got shorter since last time).

        One count, and one delete commit only when something is stale (the common case
        commits nothing: each commit is a round trip on object storage)."""
        if not n_clips:
            return 0
        per_video = " OR ".join(
            f"(video_id = {sql_literal(v)} AND clip_index >= {int(n)})" for v, n in n_clips.items()
        )
        predicate = encoder_scope(encoder, per_video)
        stale = self.table.count_rows(predicate)
        if stale:
            self.table.delete(predicate)
        return stale

    def search(
        self,
        vectors: np.ndarray,
        where: str | None = None,
        limit: int = 10,
        columns: Sequence[str] = ("video_id", "clip_index"),
    ) -> pa.Table:
        """Cosine search of (B, Q) query vectors over the indicators, WHERE as a pre-filter.

        Returns ``query_index``, the requested columns and ``score = 1 - cosine distance``,
        ``limit`` rows per query. Only the named columns are read (never the tokens unless
        asked: on object storage that is the difference between 50 ms and seconds)."""
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]  # (1, Q)
        width = self.indicator_width
        if queries.shape[1] != width:
            raise StorageError(
                f"{MEMORIES} table in {self.cfg.db} holds indicators of {width} values, but "
                f"this model searches with {queries.shape[1]}: another model wrote it (use "
                "that model's --model, or ingest again into another --db)"
            )
        wanted = [c for c in columns if c not in ("score", "query_index")]
        query = (
            self.table.search(queries, vector_column_name="indicator")
            .distance_type("cosine")
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

    def fetch_memories(
        self, keys: Sequence[tuple[str, int]], encoder: str
    ) -> dict[tuple[str, int], np.ndarray]:
        """Dequantised (M, D) memories of some clips; keys that are not stored are absent."""
        by_video: dict[str, set[int]] = {}
        for video_id, clip_index in keys:
            by_video.setdefault(video_id, set()).add(int(clip_index))
        m = self.table.schema.field("memory_scale").type.list_size
        out: dict[tuple[str, int], np.ndarray] = {}
        for videos in chunks(sorted(by_video), 100):
            ors = " OR ".join(
                f"(video_id = {sql_literal(v)} AND {in_list('clip_index', sorted(by_video[v]))})"
                for v in videos
            )
            where = encoder_scope(encoder, ors)
            cols = ["video_id", "clip_index", "memory", "memory_scale"]
            rows = self.scan(where, cols)
            out.update(_decode_memories(rows, m))
        return out

    def create_indexes(self, min_rows: int = IVF_MIN_ROWS) -> list[str]:
        """Best effort: a BTree on video_id, and IVF_PQ (cosine) on the indicators once the
        table has ``min_rows`` rows; later calls fold new rows into the existing indexes
        (``optimize``, which also compacts the small fragments of many commits) instead of
        rebuilding them. Returns what was done; failures are logged (indexes only speed up).
        """
        table = self.table
        existing = {tuple(ix.columns): ix.name for ix in table.list_indices()}
        done = []
        try:
            if ("video_id",) not in existing and table.count_rows() > 0:
                table.create_scalar_index("video_id", index_type="BTREE")
                done.append("index video_id")
            if ("indicator",) not in existing and table.count_rows() >= min_rows:
                dim = table.schema.field("indicator").type.list_size
                config = IvfPq(distance_type="cosine", num_sub_vectors=_sub_vectors(dim))
                table.create_index("indicator", config=config)
                done.append("index indicator")
            elif ("indicator",) in existing:
                stats = table.index_stats(existing[("indicator",)])
                if stats is not None and stats.num_unindexed_rows > 0:
                    table.optimize()
                    done.append(f"optimize ({stats.num_unindexed_rows} new rows indexed)")
        except Exception as exc:  # noqa: BLE001 - an index is an optimisation only
            log.warning("could not refresh the indexes of %s: %s", self.cfg.db, exc)
        return done

    def count(self, table: str = MEMORIES) -> int:
        """Rows in a table of this database (0 when it does not exist)."""
        handle = open_table(self.db, table)
        return 0 if handle is None else handle.count_rows()


def _check_dims(have: pa.Schema, want: pa.Schema, db: str) -> None:
    problems = []
    for name in ("indicator", "memory", "memory_scale"):
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


def _sub_vectors(dim: int) -> int:
    """PQ sub-vectors: the largest divisor of dim not above dim / 8 (8-d sub-vectors)."""
    return next(s for s in range(max(1, dim // 8), 0, -1) if dim % s == 0)


def _memory_batch(
    records: list[MemoryRecord], encoder: str, meta: dict[str, VideoTask], schema: pa.Schema
) -> pa.Table:
    q_dim = schema.field("indicator").type.list_size
    m = schema.field("memory_scale").type.list_size
    md = schema.field("memory").type.list_size
    missing = sorted({r.video_id for r in records} - meta.keys())
    if missing:
        raise StorageError(f"no VideoTask given for videos {missing[:5]}")
    indicators = np.stack([np.asarray(r.indicator, np.float32).reshape(-1) for r in records])
    memories = [np.asarray(r.memory, np.float32) for r in records]
    bad = next((mem.shape for mem in memories if mem.shape != (m, md // m)), None)
    if indicators.shape[1] != q_dim or bad is not None:
        raise StorageError(
            f"records do not fit the {MEMORIES} table: indicator dim {indicators.shape[1]} "
            f"(table {q_dim}), memory {bad or memories[0].shape} (table {(m, md // m)})"
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
        "indicator": pa.FixedSizeListArray.from_arrays(pa.array(indicators.reshape(-1)), q_dim),
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


def _decode_memories(rows: pa.Table, m: int) -> dict[tuple[str, int], np.ndarray]:
    if rows.num_rows == 0:
        return {}
    tokens = rows["memory"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    scales = rows["memory_scale"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
    n = rows.num_rows
    tokens = tokens.reshape(n, -1)  # (N, M*D)
    scales = scales.reshape(n, m)  # (N, M)
    keys = zip(rows["video_id"].to_pylist(), rows["clip_index"].to_pylist(), strict=True)
    return {
        (vid, int(ci)): dequantize_tokens(tokens[i], scales[i], m)
        for i, (vid, ci) in enumerate(keys)
    }
