"""The service's object-storage paths on moto's S3 server (loopback): a segment cut from
a video on S3 through ranged reads, and a batch's files (Parquet questions, results)."""

from __future__ import annotations

import io

import av
import pyarrow as pa
import pyarrow.parquet as pq

from service.batches import _write_bytes, parquet_questions
from service.media import cut_segment
from storage.archive import open_video, read_file
from storage.uri import s3_client
from world.samples import write_synthetic_video


def _packets(data: bytes) -> list[bytes]:
    with av.open(io.BytesIO(data)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def test_a_segment_cut_from_s3_equals_the_one_cut_from_the_file(s3_server, s3_bucket, tmp_path):
    path = write_synthetic_video(tmp_path / "v.mp4", 6, gop_seconds=1.0)
    bucket = s3_bucket()
    s3_client(s3_server).put_object(Bucket=bucket, Key="cam/v.mp4", Body=path.read_bytes())
    source = open_video(f"s3://{bucket}/cam/v.mp4", s3_server)
    try:
        remote = cut_segment(source, 2.5, 4.0)
    finally:
        source.close()
    local = cut_segment(str(path), 2.5, 4.0)
    assert _packets(remote) == _packets(local) and len(_packets(local)) == 60  # 2 s at 30 fps


def test_batch_files_on_s3(s3_server, s3_bucket):
    bucket = s3_bucket()
    questions = pa.table({"question": ["a", "b"], "k": [1, None]})
    sink = io.BytesIO()
    pq.write_table(questions, sink)
    _write_bytes(f"s3://{bucket}/in/q.parquet", sink.getvalue(), s3_server)
    assert parquet_questions(f"s3://{bucket}/in/q.parquet", s3_server) == [
        {"question": "a", "k": 1},
        {"question": "b"},
    ]
    assert read_file(f"s3://{bucket}/in/q.parquet", s3_server) == sink.getvalue()
