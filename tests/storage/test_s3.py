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


# ---- faults: bounded retries, timeouts, one-line errors, no credentials in them ------------
@pytest.fixture
def silent_endpoint():
    """A loopback TCP server that accepts connections and never answers (a hung endpoint);
    yields (endpoint, connections accepted so far)."""
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:  # closed at teardown
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}", accepted
    server.close()
    for conn in accepted:
        conn.close()


def test_slow_endpoint_is_retried_a_bounded_number_of_times(silent_endpoint):
    import time

    endpoint, accepted = silent_endpoint
    options = {
        "aws_endpoint": endpoint,
        "aws_access_key_id": "AKIDEXAMPLE1",
        "aws_secret_access_key": "slow-endpoint-secret-9f3",
        "aws_region": "us-east-1",
        "timeout": "1s",
        "client_max_retries": "1",
    }
    started = time.monotonic()
    with pytest.raises(ArchiveError) as raised:
        open_video("s3://bucket/videos/a.mp4", options)
    assert time.monotonic() - started < 10
    message = str(raised.value)
    assert f"cannot reach s3 endpoint {endpoint} for s3://bucket/videos/a.mp4" in message
    assert "timeout" in message.lower() and "\n" not in message
    assert "slow-endpoint-secret-9f3" not in message and "AKIDEXAMPLE1" not in message
    assert len(accepted) == 2  # the first try and one retry, no more


def test_lancedb_on_a_slow_endpoint_is_one_line_in_bounded_time(silent_endpoint):
    import time

    from storage.db import StorageError, connect

    endpoint, _ = silent_endpoint
    options = {
        "aws_endpoint": endpoint,
        "aws_secret_access_key": "lance-secret-77",
        "aws_access_key_id": "AKIDLANCE",
        "aws_region": "us-east-1",
        "timeout": "500ms",
        "client_max_retries": "0",
        "client_retry_timeout": "2",
    }
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        connect(StorageConfig(db="s3://bucket/db", storage_options=options))
    # LanceDB retries a failed listing a few times itself (~6 tries here), each bounded
    assert time.monotonic() - started < 12
    message = str(raised.value)
    assert message.startswith(f"cannot reach s3 endpoint {endpoint} for s3://bucket/db")
    assert "lance-secret-77" not in message and "\n" not in message


def test_retry_settings_reach_boto3_and_lancedb(s3_server):
    from storage.uri import RETRY_DEFAULTS, lance_options

    opts = lance_options({**s3_server, "client_max_retries": "5"})
    assert opts["client_max_retries"] == "5" and opts["timeout"] == RETRY_DEFAULTS["timeout"]
    config = s3_client({**s3_server, "client_max_retries": "5", "connect_timeout": "2s"}).meta
    assert config.config.retries == {"total_max_attempts": 6, "mode": "standard"}
    assert config.config.connect_timeout == 2.0


def test_redact_hides_every_credential(monkeypatch):
    from storage.uri import redact

    monkeypatch.setenv("AWS_SESSION_TOKEN", "env-session-token-123")
    options = {"aws_secret_access_key": "opt-secret-456", "access_key_id": "AKIDOPTIONS"}
    text = (
        "failed: key AKIDOPTIONS secret opt-secret-456 token env-session-token-123; "
        'AmazonS3Config { secret_access_key: Some("other-secret"), region: "us-east-1" } '
        "https://h/b/k?X-Amz-Credential=AKIDX%2F2024&X-Amz-Signature=abcdef0123 "
        "aws_session_token=tok-zzz"
    )
    clean = redact(text, options)
    for secret in ["AKIDOPTIONS", "opt-secret-456", "env-session-token-123", "other-secret",
                   "AKIDX", "abcdef0123", "tok-zzz"]:  # fmt: skip
        assert secret not in clean
    assert clean.startswith("failed: key *** secret *** token ***;")
    assert 'region: "us-east-1"' in clean  # the rest of the message stays readable
    assert redact("key x", {"aws_secret_access_key": "x"}) == "key x"  # too short to matter


def test_config_json_hides_credentials_and_the_environment_fills_them(monkeypatch):
    from schemas.config import VMemConfig
    from storage.uri import lance_options

    cfg = VMemConfig(
        storage=StorageConfig(
            db="s3://b/db",
            storage_options={"aws_secret_access_key": "json-secret-1", "aws_region": "eu-west-1"},
        )
    )
    dumped = cfg.model_dump_json()
    assert "json-secret-1" not in dumped and "eu-west-1" in dumped
    assert cfg.model_dump()["storage"]["storage_options"]["aws_secret_access_key"] == (
        "json-secret-1"
    )  # the Python dump (pickled to Ray actors) keeps it
    back = VMemConfig.model_validate_json(dumped)  # e.g. a Prefect deployment's parameters
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-the-env")
    assert lance_options(back.storage.storage_options)["aws_secret_access_key"] == "from-the-env"
