"""More than one machine: a Ray cluster of three nodes on loopback ingests an archive on S3
(moto's server) into a database on S3, with the decode and encode actors on nodes other
than the driver's (placed by the config's custom resources); a local folder is refused on
such a cluster with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_a_three_node_cluster_ingests_from_s3_with_actors_off_the_driver(
    tmp_path, s3_server, s3_bucket, prefect_harness, make_config
):
    from prefect.settings import PREFECT_API_URL

    from world.samples import write_synthetic_video

    bucket = s3_bucket("multinode")
    client = boto3.client(
        "s3",
        endpoint_url=s3_server["endpoint"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    for seed, name in enumerate(("one.mp4", "two.mp4")):
        path = write_synthetic_video(tmp_path / name, 3.0, seed=seed)
        client.upload_file(str(path), bucket, f"videos/{name}")
    local = tmp_path / "local"
    write_synthetic_video(local / "here-only.mp4", 2.0, seed=9)
    # the credentials come from the environment, as from the Secret of deploy/ray-cluster.yaml
    options = {k: s3_server[k] for k in ("aws_endpoint", "allow_http", "aws_region")}
    cfg = make_config(f"s3://{bucket}/db", storage_options=options, num_decoders=1)
    cfg = cfg.with_overrides(
        encode={"decode_resources": {"decode": 1}, "encode_resources": {"encode": 1}}
    )
    config = tmp_path / "vmem.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))

    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),  # the session's Prefect server
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "AWS_ACCESS_KEY_ID": s3_server["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": s3_server["aws_secret_access_key"],
    }
    source = f"s3://{bucket}/videos"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "tests/e2e/multinode_driver.py"),
            str(config),
            source,
            str(local),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    seen = json.loads(lines[-1].removeprefix("RESULT "))

    assert (seen["report"]["done"], seen["report"]["failed"]) == (2, 0)
    assert seen["report"]["clips"] > 0
    placed = {(a["class"], a["node"]) for a in seen["actors"]}
    decode = {node for cls, node in placed if "Decode" in cls}
    encode = {node for cls, node in placed if "Encode" in cls}
    assert decode == {seen["nodes"]["decode"]}, placed
    assert encode == {seen["nodes"]["encode"]}, placed
    assert seen["driver_node"] not in decode | encode  # the driver (and its writer) elsewhere
    assert "lancedb fork support is experimental" in seen["worker_env"]  # quiet workers too

    refused = seen["local_folder"]
    assert "here-only.mp4" in refused and "s3://" in refused and "3 nodes" in refused
    assert "\n" not in refused
