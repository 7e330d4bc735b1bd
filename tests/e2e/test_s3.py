"""Archive and memories on object storage: moto's S3 server on loopback, boto3 and LanceDB."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from actors.query import QueryStage
from actors.runtime import bind_model
from cli.app import app
from flows.ingest import run_ingest
from schemas.records import Question
from storage.catalog import Catalog
from storage.memories import MemoryStore

from ..conftest import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture
def s3_archive(s3_client, s3_bucket, good_videos):
    bucket = s3_bucket("archive")
    s3_client.upload_file(str(good_videos["short.mp4"]), bucket, "videos/news/short.mp4")
    s3_client.upload_file(str(good_videos["medium.mp4"]), bucket, "videos/sport/medium.mp4")
    s3_client.put_object(Bucket=bucket, Key="videos/news/notes.mp4", Body=b"not a video at all")
    s3_client.put_object(Bucket=bucket, Key="videos/readme.txt", Body=b"ignored: not a video name")
    return bucket


def test_ingest_from_s3_into_lancedb_on_s3(
    s3_server, s3_archive, prefect_harness, ray_local, make_config
):
    cfg = make_config(f"s3://{s3_archive}/db", storage_options=s3_server)
    source = f"s3://{s3_archive}/videos"
    report = run_ingest(source, cfg)
    assert (report.done, report.failed) == (2, 1)
    rows = {r["uri"]: r for r in Catalog(MemoryStore(cfg.storage)).all().to_pylist()}
    assert rows[f"{source}/news/notes.mp4"]["status"] == "failed"
    assert "notes.mp4" in rows[f"{source}/news/notes.mp4"]["error"]
    assert rows[f"{source}/sport/medium.mp4"]["tags"] == ["sport"]

    bound = bind_model(cfg)
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    result = stage.select(
        [Question(question="a sports clip", where="array_has(tags, 'sport')")], with_memory=True
    )[0]
    assert result.error is None and result.clips
    assert {c.uri for c in result.clips} == {f"{source}/sport/medium.mp4"}
    m, d = bound.dims[1], bound.dims[2]
    assert all(c.memory.shape == (m, d) for c in result.clips)

    again = run_ingest(source, cfg)
    assert (again.done, again.failed, again.skipped, again.failed_before) == (0, 0, 2, 1)
    assert MemoryStore(cfg.storage).count() == report.clips


def test_cli_names_an_unreachable_endpoint(tmp_path, prefect_harness):
    endpoint = f"http://127.0.0.1:{free_port()}"
    config = tmp_path / "vmem.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "storage": {
                    "db": str(tmp_path / "db"),
                    "storage_options": {
                        "aws_endpoint": endpoint,
                        "aws_access_key_id": "x",
                        "aws_secret_access_key": "x",
                    },
                }
            }
        )
    )
    result = CliRunner().invoke(app, ["ingest", "s3://nowhere/videos", "--config", str(config)])
    assert result.exit_code == 2, result.output
    assert endpoint in result.output and "reach" in result.output


def test_status_json_lists_s3_videos(
    s3_server, s3_archive, prefect_harness, ray_local, make_config, tmp_path
):
    cfg = make_config(f"s3://{s3_archive}/db", storage_options=s3_server)
    run_ingest(f"s3://{s3_archive}/videos", cfg)
    config = tmp_path / "vmem.yaml"
    config.write_text(yaml.safe_dump({"storage": cfg.storage.model_dump()}))
    result = CliRunner().invoke(app, ["status", "--config", str(config), "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    assert sorted(r["status"] for r in rows) == ["done", "done", "failed"]
    assert all(
        {"uri", "video_id", "status", "error", "n_clips", "duration_s"} <= set(r) for r in rows
    )
