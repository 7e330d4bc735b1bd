"""Storage over an S3 API server on loopback (moto): small objects, small tables."""

from __future__ import annotations

import io
import socket

import numpy as np
import pytest

from schemas.config import StorageConfig
from schemas.records import VideoOutcome
from storage.archive import ArchiveError, S3RangeReader, list_source, open_video
from storage.catalog import Catalog
from storage.memories import MemoryStore
from storage.uri import s3_client


def put(options, bucket: str, key: str, data: bytes) -> None:
    s3_client(options).put_object(Bucket=bucket, Key=key, Body=data)


def test_list_s3_prefix(s3_server, s3_bucket):
    bucket = s3_bucket()
    for key in ["videos/a.mp4", "videos/news/2024/b.MOV", "videos/news/c.txt", "videos2/d.mp4"]:
        put(s3_server, bucket, key, b"0123456789")
    tasks = list_source(f"s3://{bucket}/videos", s3_server)
    assert [t.uri for t in tasks] == [
        f"s3://{bucket}/videos/a.mp4",
        f"s3://{bucket}/videos/news/2024/b.MOV",
    ]
    assert tasks[1].tags == ("news", "2024") and tasks[0].tags == ()
    assert tasks[0].size == 10 and tasks[0].etag and '"' not in tasks[0].etag
    assert tasks[0].archive == f"s3://{bucket}/videos"
    assert tasks[0].modified_at is not None and tasks[0].modified_at.utcoffset().seconds == 0
    assert len(list_source(f"s3://{bucket}", s3_server)) == 3  # whole bucket


def test_open_video_ranged_reads(s3_server, s3_bucket):
    bucket = s3_bucket()
    data = np.random.default_rng(0).integers(0, 256, size=3_000_000, dtype=np.uint8).tobytes()
    put(s3_server, bucket, "big.mp4", data)
    uri = f"s3://{bucket}/big.mp4"

    stream = open_video(uri, s3_server)
    assert isinstance(stream, io.BufferedReader) and stream.seekable()
    assert stream.read() == data
    stream.seek(1_234_567)
    assert stream.read(1000) == data[1_234_567:1_235_567]
    stream.seek(-10, io.SEEK_END)
    assert stream.read() == data[-10:]

    raw = S3RangeReader(uri, s3_server)  # a seek + small read fetches a small range only
    fetched = []
    original = raw._get_range
    raw._get_range = lambda first, last: fetched.append(last - first + 1) or original(first, last)
    small = io.BufferedReader(raw, buffer_size=64 * 1024)
    small.seek(2_000_000)
    assert small.read(100) == data[2_000_000:2_000_100]
    assert sum(fetched) <= 64 * 1024 < len(data)


def test_missing_object_and_bucket(s3_server, s3_bucket):
    bucket = s3_bucket()
    with pytest.raises(ArchiveError, match=f"object not found: s3://{bucket}/nope.mp4"):
        open_video(f"s3://{bucket}/nope.mp4", s3_server)
    with pytest.raises(ArchiveError, match="bucket not found: s3://no-such-bucket-x"):
        list_source("s3://no-such-bucket-x/videos", s3_server)


def test_unreachable_endpoint_fails_fast(s3_server):
    with socket.socket() as sock:  # a loopback port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    options = {**s3_server, "aws_endpoint": f"http://127.0.0.1:{port}"}
    options.pop("endpoint")
    with pytest.raises(ArchiveError, match=f"cannot reach s3 endpoint http://127.0.0.1:{port}"):
        list_source("s3://bucket/videos", options)
    with pytest.raises(ArchiveError, match="cannot reach s3 endpoint"):
        open_video("s3://bucket/a.mp4", options)


def test_memory_store_and_catalog_on_s3(s3_server, s3_bucket, make_batch, fake):
    cfg = StorageConfig(db=f"s3://{s3_bucket()}/db", storage_options=s3_server)
    store = MemoryStore(cfg)
    store.ensure_memories(fake.Q, fake.M, fake.D)
    records, meta = make_batch({"v1": 2, "v2": 2})
    store.write_memories(records, fake.encoder, meta)
    store.write_memories(records, fake.encoder, meta)
    assert store.count() == 4

    hits = store.search(records[3].archive_key, "archive = 'news'", 1, ["video_id", "clip_index"])
    assert (hits["video_id"][0].as_py(), hits["clip_index"][0].as_py()) == (
        records[3].video_id,
        records[3].clip_index,
    )
    memory = store.fetch_memories([(records[3].video_id, 1)], fake.encoder)
    np.testing.assert_allclose(
        memory[(records[3].video_id, 1)],
        records[3].memory,
        atol=np.abs(records[3].memory).max() / 200,
    )
    Catalog(store).record(
        [VideoOutcome(task=t, status="done", n_clips=2) for t in meta.values()], fake.encoder
    )
    assert Catalog(cfg).get(list(meta))[records[0].video_id]["status"] == "done"
