"""The archive keys' ANN index where it is built (from 10k rows): what ``create_indexes``
builds recalls the exact top 10 of clustered synthetic clips, with and without a filter.

The archive is ``bench/bench_scale.py``'s generator at 20k clips (about 320 videos), with
random unit cluster centres instead of question embeddings (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_scale import FILTER_ARCHIVE, Truth, memory_records, normalize, synthetic_videos
from models.select import archive_key_width, archive_keys, archive_queries
from schemas.config import StorageConfig
from storage.memories import IVF_MIN_ROWS, MemoryStore

CLIPS, Q, M = 20_000, 64, 8  # clips; indicator width; tokens per clip (D = Q: the tokens
# themselves are stored as the memory, which only the video stage reads)
ENCODER = "scale-test@1"
N_QUERIES = 50


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple[MemoryStore, Truth, list[str], np.ndarray]:
    """A 20k-clip memories table written batch by batch, indexed; its exact ground truth,
    what ``create_indexes`` did, and queries near the data (noisy cluster centres)."""
    rng = np.random.default_rng(0)
    centres = normalize(rng.standard_normal((400, Q))).astype(np.float32)
    store = MemoryStore(StorageConfig(db=str(tmp_path_factory.mktemp("scale"))))
    store.ensure_memories(archive_key_width(Q), M, Q)
    parts = []
    for batch in synthetic_videos(CLIPS, 0, centres, M):
        n = len(batch.tokens)
        keys = archive_keys(batch.tokens.reshape(n, M * Q), Q)
        per_video = memory_records(batch, batch.tokens, keys, 16.0)
        meta = {task.video_id: task for task in batch.tasks}
        store.write_memories([r for video in per_video for r in video], ENCODER, meta)
        parts.append(Truth.of_batch(batch, batch.tokens))
    truth = Truth.concat(parts)
    done = store.create_indexes()
    picked = centres[rng.integers(0, len(centres), size=N_QUERIES)]
    queries = normalize(picked + 0.05 * rng.standard_normal(picked.shape)).astype(np.float32)
    return store, truth, done, queries


def recall_at_10(store: MemoryStore, truth: Truth, queries: np.ndarray, archive=None) -> float:
    where = None if archive is None else f"archive = 'a{archive:02d}'"
    found = []
    for query in queries:
        hits = store.search(archive_queries(query[None]), where, 10, ["video_id", "clip_index"])
        exact = truth.top(query, 10, archive)
        found.append(len(set(truth.rows(hits).tolist()) & set(exact.tolist())) / 10)
    return float(np.mean(found))


def test_create_indexes_builds_the_ivf_pq_over_every_row(indexed) -> None:
    store, truth, done, _ = indexed
    assert len(truth.means) == CLIPS >= IVF_MIN_ROWS
    assert "index archive_key" in done and "index archive" in done
    (ann,) = [ix for ix in store.table.list_indices() if ix.columns == ["archive_key"]]
    assert ann.index_type == "IvfPq"
    assert store.table.index_stats(ann.name).num_unindexed_rows == 0


def test_ann_recall_at_10_unfiltered(indexed) -> None:
    store, truth, _, queries = indexed
    assert recall_at_10(store, truth, queries) >= 0.95


def test_ann_recall_at_10_with_an_archive_filter(indexed) -> None:
    store, truth, _, queries = indexed
    share = float(np.mean(truth.archive == FILTER_ARCHIVE))
    assert 0.03 < share < 0.2  # a selective filter, not the whole table
    assert recall_at_10(store, truth, queries, FILTER_ARCHIVE) >= 0.95
