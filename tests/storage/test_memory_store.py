from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from storage.db import LOCK_NAME, StorageError, writer_lock
from storage.memories import COMPACT_FRAGMENTS, MemoryStore

REPO = Path(__file__).resolve().parents[2]


def test_ensure_memories_checks_dims(store, local_cfg, fake):
    store.ensure_memories(fake.Q, fake.M, fake.D)  # same dims: fine
    other = MemoryStore(local_cfg)
    with pytest.raises(
        StorageError, match="archive_key has 16 values per row, the encoder needs 32"
    ):
        other.ensure_memories(32, fake.M, fake.D)
    with pytest.raises(StorageError, match="memory_scale has 2 values"):
        other.ensure_memories(fake.Q, 3, fake.D)


def test_missing_table_is_a_clear_error(local_cfg):
    with pytest.raises(StorageError, match="no memories table"):
        MemoryStore(local_cfg).search(np.ones((1, 8), np.float32))
    assert MemoryStore(local_cfg).count() == 0


def test_write_twice_does_not_duplicate(store, make_batch, fake):
    records, meta = make_batch({"v1": 3, "v2": 2})
    assert store.write_memories(records, fake.encoder, meta) == 5
    store.write_memories(records, fake.encoder, meta)
    assert store.count() == 5
    # a changed clip overwrites its row; another encoder version gets its own rows
    records[0].t_end = 99.0
    store.write_memories(records[:1], fake.encoder, meta)
    store.write_memories(records[:2], "fake-enc@2", meta)
    assert store.count() == 7
    row = store.scan(f"encoder = '{fake.encoder}' AND clip_index = 0 AND t_end = 99", ["uri"])
    assert row.num_rows == 1 and row["uri"][0].as_py() == "/archive/v1.mp4"


def test_batch_search_with_filter(store, make_batch, fake):
    news, news_meta = make_batch({"n1": 3, "n2": 3}, archive="news")
    sport, sport_meta = make_batch({"s1": 3}, archive="sport", seed=7)
    store.write_memories(news + sport, fake.encoder, news_meta | sport_meta)
    queries = np.stack([news[4].archive_key, sport[1].archive_key])  # (2, Q)
    hits = store.search(queries, "archive = 'news'", 2, ["video_id", "clip_index", "archive"])
    assert hits.column_names == ["query_index", "video_id", "clip_index", "archive", "score"]
    assert sorted(hits["query_index"].to_pylist()) == [0, 0, 1, 1]
    assert set(hits["archive"].to_pylist()) == {"news"}  # pre-filter: sport never comes back
    best = hits.filter(hits["query_index"].to_numpy() == 0).slice(0, 1).to_pylist()[0]
    assert (best["video_id"], best["clip_index"]) == (news[4].video_id, news[4].clip_index)
    assert best["score"] == pytest.approx(1.0, abs=1e-5)
    top_sport = store.search(queries[1], None, 1, ["video_id"])  # a single (Q,) vector
    assert top_sport["video_id"][0].as_py() == sport[1].video_id
    assert top_sport["query_index"].to_pylist() == [0]
    wider = np.tile(queries, (1, 8))  # a per-token model's query over a mean model's table
    with pytest.raises(StorageError, match=f"archive keys of {fake.Q} values, but this model"):
        store.search(wider, None, 2)


def test_delete_stale_clips(store, make_batch, fake):
    records, meta = make_batch({"v1": 4, "v2": 2})
    store.write_memories(records, fake.encoder, meta)
    v1 = records[0].video_id
    assert store.delete_stale_clips({v1: 2}, fake.encoder) > 0  # v1 got shorter: 2 clips now
    assert store.delete_stale_clips({v1: 2}, fake.encoder) == 0  # nothing stale any more
    clips = store.scan(None, ["video_id", "clip_index"]).to_pylist()
    per_video = {}
    for row in sorted(clips, key=lambda r: (r["video_id"], r["clip_index"])):
        per_video.setdefault(row["video_id"], []).append(row["clip_index"])
    assert per_video == {v1: [0, 1], records[-1].video_id: [0, 1]}


def test_fetch_memories_dequantised(store, make_batch, fake):
    records, meta = make_batch({"v1": 3})
    store.write_memories(records, fake.encoder, meta)
    keys = [(r.video_id, r.clip_index) for r in records[1:]] + [("nope", 0)]
    got = store.fetch_memories(keys, fake.encoder)
    assert set(got) == set(keys[:-1])
    for record in records[1:]:
        memory = got[(record.video_id, record.clip_index)]
        assert memory.shape == (fake.M, fake.D) and memory.dtype == np.float32
        np.testing.assert_allclose(memory, record.memory, atol=np.abs(record.memory).max() / 200)


def test_write_rejects_wrong_shapes(store, make_batch, fake):
    records, meta = make_batch({"v1": 1})
    records[0].memory = np.zeros((fake.M + 1, fake.D), np.float32)
    with pytest.raises(StorageError, match="memory"):
        store.write_memories(records, fake.encoder, meta)
    with pytest.raises(StorageError, match="no VideoTask"):
        store.write_memories(make_batch({"v2": 1})[0], fake.encoder, meta)


def test_create_indexes(store, make_batch, fake):
    records, meta = make_batch({f"v{i}": 10 for i in range(30)})
    store.write_memories(records, fake.encoder, meta)
    scalar = ["index video_id", "index encoder", "index archive", "index recorded_at", "index tags"]
    assert store.create_indexes(min_rows=10_000) == scalar  # no ANN index below min_rows
    assert store.create_indexes(min_rows=200) == ["index archive_key"]
    kinds = {ix.columns[0]: ix.index_type for ix in store.table.list_indices()}
    assert kinds == {
        "video_id": "BTree",
        "encoder": "Bitmap",
        "archive": "Bitmap",
        "recorded_at": "BTree",
        "tags": "LabelList",
        "archive_key": "IvfPq",
    }
    hits = store.search(records[5].archive_key, None, 3, ["video_id"])
    assert hits.num_rows == 3
    assert store.create_indexes(min_rows=200) == []  # nothing new: nothing to do
    more, more_meta = make_batch({"late": 5})
    store.write_memories(more, fake.encoder, more_meta)
    late = store.search(more[2].archive_key, None, 1, ["video_id", "clip_index"]).to_pylist()
    assert late[0]["clip_index"] == 2  # new rows are searched before they are indexed
    assert store.create_indexes(min_rows=200) == ["optimize (5 new rows indexed)"]
    stats = store.table.index_stats("archive_key_idx")
    assert stats.num_unindexed_rows == 0 and stats.num_indexed_rows == 305


def test_writer_lock_excludes_other_holders(local_cfg):
    lock_path = Path(local_cfg.db) / LOCK_NAME
    with writer_lock(local_cfg):
        with open(lock_path) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(lock_path) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free again
        fcntl.flock(other, fcntl.LOCK_UN)
    # s3:// databases: a conditional-put lease object instead (tests/storage/test_lease.py)


WRITER = """
import json, sys
sys.path.insert(0, sys.argv[1])
from schemas.config import StorageConfig
from storage.memories import MemoryStore
from storage.db import writer_lock
sys.path.insert(0, sys.argv[3])
from conftest import ENCODER, Q, M, D, fake_records, fake_task
cfg = StorageConfig(db=sys.argv[2])
tasks = [fake_task(f"v{i}") for i in range(4)]
records = [r for t in tasks for r in fake_records(t, 3)]
with writer_lock(cfg):
    store = MemoryStore(cfg)
    store.ensure_memories(Q, M, D)
    store.write_memories(records, ENCODER, {t.video_id: t for t in tasks})
print(json.dumps(len(records)))
"""


def test_two_processes_writing_the_same_keys_do_not_duplicate(local_cfg):
    args = [sys.executable, "-c", WRITER, str(REPO), local_cfg.db, str(Path(__file__).parent)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, env=env) for _ in range(2)]
    written = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert MemoryStore(local_cfg).count() == written[0] == 12


def test_holds_only_tells_whether_one_encoder_wrote_every_row(store, make_batch, fake):
    records, meta = make_batch({"v1": 2})
    store.write_memories(records, fake.encoder, meta)
    assert not store.holds_only("other") and store.holds_only(fake.encoder)
    store.write_memories(records, "other", meta)
    assert store.holds_only(fake.encoder)  # the answer is trusted for ENCODER_CHECK_S
    store._only = None  # (as after ENCODER_CHECK_S)
    assert not store.holds_only(fake.encoder)


def test_create_indexes_compacts_many_small_commits(store, make_batch, fake):
    for i in range(COMPACT_FRAGMENTS):  # a large ingest: one commit per batch of videos
        records, meta = make_batch({f"c{i}": 3})
        store.write_memories(records, fake.encoder, meta)
    before = store.table.stats()["fragment_stats"]["num_fragments"]
    done = store.create_indexes(min_rows=10_000)
    assert done[0] == f"compact ({COMPACT_FRAGMENTS} small fragments)"
    assert before >= COMPACT_FRAGMENTS
    assert store.table.stats()["fragment_stats"]["num_fragments"] == 1
    assert store.table.count_rows() == 3 * COMPACT_FRAGMENTS  # nothing lost or duplicated
    assert store.create_indexes(min_rows=10_000) == []  # compact once, not every run
