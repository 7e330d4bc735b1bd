"""More than one machine: a Ray cluster of three nodes on loopback ingests an archive on S3
(moto's server) into a database on S3, with the decode and encode actors on nodes other
than the driver's (placed by the config's custom resources); a local folder is refused on
such a cluster with one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def test_a_three_node_cluster_ingests_from_s3_with_actors_off_the_driver(
    tmp_path, s3_server, s3_client, s3_bucket, prefect_harness, make_config
):
    from prefect.settings import PREFECT_API_URL

    from world.samples import write_synthetic_video

    bucket = s3_bucket("multinode")
    for seed, name in enumerate(("one.mp4", "two.mp4")):
        path = write_synthetic_video(tmp_path / name, 3.0, seed=seed)
        s3_client.upload_file(str(path), bucket, f"videos/{name}")
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


def test_losing_the_encode_actors_node_mid_run_restarts_its_videos_elsewhere(
    tmp_path, s3_server, s3_client, s3_bucket, prefect_harness, make_config
):
    """Issue 20 point 8: the node of the encode actor dies once clips are encoded; Ray
    restarts the actor on the other node with the encode resource, the scheduler starts its
    videos again from clip 0, and every video ends done once with all its clips, none twice."""
    from prefect.settings import PREFECT_API_URL

    from storage.catalog import Catalog
    from storage.memories import MemoryStore
    from world.samples import write_synthetic_video

    from .conftest import expected_clips

    bucket = s3_bucket("node-loss")
    seconds = {"a.mp4": 6.0, "b.mp4": 4.0}
    for seed, (name, length) in enumerate(seconds.items()):
        path = write_synthetic_video(tmp_path / name, length, seed=seed)
        s3_client.upload_file(str(path), bucket, f"videos/{name}")
    options = {k: s3_server[k] for k in ("aws_endpoint", "allow_http", "aws_region")}
    cfg = make_config(f"s3://{bucket}/db", storage_options=options, num_decoders=1)
    cfg = cfg.with_overrides(
        decode={"sample_fps": 8.0},  # a few clips per second of video: steps after the loss
        encode={
            "num_actors": 1,
            "decode_resources": {"decode": 1},
            "encode_resources": {"encode": 1},
        },
    )
    config = tmp_path / "vmem.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "RAY_AUTH_MODE": "disabled",
        "RAY_USAGE_STATS_ENABLED": "0",
        "AWS_ACCESS_KEY_ID": s3_server["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": s3_server["aws_secret_access_key"],
    }
    driver = [sys.executable, str(REPO / "tests/e2e/multinode_driver.py"), "--lose-encode-node"]
    result = subprocess.run(
        [*driver, str(config), f"s3://{bucket}/videos"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-3000:]
    seen = json.loads(lines[-1].removeprefix("RESULT "))

    # the node went while the run went on, and the actor came back on the other one
    assert seen.get("removed_mid_run") and seen["clips_at_loss"] > 0, seen
    assert seen["removed"] in seen["encode_nodes"], seen
    after = seen["encoder_after"]
    assert after["restarts"] >= 1 and after["node"] != seen["removed"], seen
    assert after["node"] in seen["encode_nodes"], seen

    report = seen["report"]
    assert (report["done"], report["failed"]) == (len(seconds), 0), report["failures"]
    clip_frames = 16  # the default model's clip length
    want = {
        name: expected_clips(length, cfg.decode.sample_fps, clip_frames)
        for name, length in seconds.items()
    }
    assert report["clips"] == sum(want.values()), (report, want)
    assert seen["clips_encoded"] > report["clips"], seen  # clips encoded again, stored once

    storage = make_config(f"s3://{bucket}/db", storage_options=s3_server).storage  # with keys
    videos = Catalog(storage).all(["video_id", "uri", "status", "n_clips"]).to_pylist()
    names = [row["uri"].rsplit("/", 1)[-1] for row in videos]
    assert sorted(names) == sorted(seconds), videos  # each video once in the catalog
    for row, name in zip(videos, names, strict=True):
        assert (row["status"], row["n_clips"]) == ("done", want[name]), row
    memories = MemoryStore(storage).table.search().select(["video_id", "clip_index"])
    keys = [(r["video_id"], r["clip_index"]) for r in memories.limit(None).to_arrow().to_pylist()]
    assert len(keys) == len(set(keys)) == sum(want.values()), Counter(keys).most_common(3)
    ids = {row["video_id"]: want[name] for row, name in zip(videos, names, strict=True)}
    assert Counter(video_id for video_id, _ in keys) == Counter(ids), keys
