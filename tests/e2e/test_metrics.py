"""`vmem ingest --metrics-port`: a tiny real run (Ray, Prefect, LanceDB) serves Prometheus
metrics on 127.0.0.1 that match what the run did."""

from __future__ import annotations

import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from cli.app import app

from ..conftest import free_port

pytestmark = pytest.mark.e2e


def _scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_an_ingest_run_serves_its_metrics(tmp_path, prefect_harness, ray_local, make_config):
    from world.samples import write_synthetic_video

    source = tmp_path / "archive"
    write_synthetic_video(source / "one.mp4", 5.0, seed=1)
    write_synthetic_video(source / "two.mp4", 3.0, seed=2)
    (source / "broken.mp4").write_bytes(b"not a video")
    cfg = make_config(tmp_path / "db")
    config = tmp_path / "vmem.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    port = free_port()

    result = CliRunner().invoke(
        app, ["ingest", str(source), "--config", str(config), "--metrics-port", str(port)]
    )
    assert result.exit_code == 3, result.output  # the broken video newly failed

    metrics = _scrape(port)  # the server outlives the run for a last scrape
    assert metrics[("vmem_ingest_videos_total", (("status", "done"),))] == 2
    assert metrics[("vmem_ingest_videos_total", (("status", "failed"),))] == 1
    assert metrics[("vmem_ingest_videos_planned", ())] == 3
    clips = metrics[("vmem_ingest_clips_total", ())]
    assert clips >= 2 and metrics[("vmem_ingest_clips_per_second", ())] > 0
    for stage in ("decode", "encode", "commit"):
        assert metrics[("vmem_ingest_stage_seconds_count", (("stage", stage),))] >= 1, stage
    for queue in ("videos_waiting", "decode_streams", "encode_steps"):
        assert metrics[("vmem_ingest_queue_depth", (("queue", queue),))] == 0  # all drained
