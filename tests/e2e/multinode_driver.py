"""Driver of tests/e2e/test_multinode.py, run in a process of its own (a Ray cluster of
several nodes next to the test session's local Ray would not mix): starts a Ray cluster of
three nodes on loopback (``ray.cluster_utils.Cluster``), ingests SOURCE with the config
file's settings through it, tries a local folder too, and prints what it saw as JSON.

    python tests/e2e/multinode_driver.py CONFIG SOURCE LOCAL_FOLDER

With ``--lose-encode-node`` it starts three nodes (the head decodes, the other two can host
the encoder),
ingests SOURCE, removes the node of the encode actor once the first clips are encoded
(as a machine dies: no graceful stop) and prints the report and what happened to the actor.

    python tests/e2e/multinode_driver.py --lose-encode-node CONFIG SOURCE
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import ray
from ray.cluster_utils import Cluster

from flows.ingest import ingest_flow, run_ingest
from flows.progress import IngestProgress
from schemas.config import load_config
from storage.archive import ArchiveError

STORE = 100 * 1024 * 1024  # object store per node (bytes): small, three nodes share a box
# a dead node noticed in about 3 s rather than Ray's default 15 s (period x threshold)
HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}


def main(config_path: str, source: str, local_folder: str) -> dict:
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": STORE}
    )
    nodes = {
        "decode": cluster.add_node(num_cpus=1, resources={"decode": 1}, object_store_memory=STORE),
        "encode": cluster.add_node(num_cpus=1, resources={"encode": 1}, object_store_memory=STORE),
    }
    cluster.wait_for_nodes()
    try:
        cfg = load_config(config_path, ray={"address": cluster.address})
        report = ingest_flow(source, cfg)  # ensure_ray joins the cluster as its driver
        seen = {
            "report": report.model_dump(mode="json"),
            "driver_node": ray.get_runtime_context().get_node_id(),
            "nodes": {name: node.node_id for name, node in nodes.items()},
            "actors": [
                {"class": a["ActorClassName"], "node": a["Address"]["NodeID"]}
                for a in ray._private.state.actors().values()  # dead ones too, with their node
            ],
            "worker_env": ray.get(_env.remote("PYTHONWARNINGS")),
        }
        try:
            ingest_flow(local_folder, cfg)
            seen["local_folder"] = "accepted"
        except ArchiveError as exc:
            seen["local_folder"] = str(exc)
        return seen
    finally:
        ray.shutdown()
        cluster.shutdown()


def lose_encode_node(config_path: str, source: str) -> dict:
    """Ingest SOURCE; once clips are encoded, remove the encode actor's node mid-run."""
    head = {"num_cpus": 1, "resources": {"decode": 1}, "object_store_memory": STORE}
    cluster = Cluster(
        initialize_head=True, head_node_args={**head, "_system_config": HEALTH_CHECKS}
    )
    encode_nodes = [  # the encoder starts on one; Ray restarts it on the other
        cluster.add_node(num_cpus=1, resources={"encode": 1}, object_store_memory=STORE)
        for _ in range(2)
    ]
    cluster.wait_for_nodes()
    encoded, finished = threading.Event(), threading.Event()
    seen: dict = {}
    started = time.perf_counter()

    clips_done = IngestProgress.clips_done  # watched, not replaced: the bars still advance

    def watch_clips(progress: IngestProgress, n: int) -> None:
        seen["clips_encoded"] = seen.get("clips_encoded", 0) + n
        if n:
            encoded.set()
        clips_done(progress, n)

    IngestProgress.clips_done = watch_clips  # type: ignore[method-assign,assignment]

    def remove_encode_node() -> None:
        if not encoded.wait(timeout=120):
            return
        host = _encode_actor()["node"]
        node = next(n for n in encode_nodes if n.node_id == host)
        seen["clips_at_loss"] = seen["clips_encoded"]
        seen["removed_mid_run"] = not finished.is_set()
        cluster.remove_node(node, allow_graceful=False)
        seen["removed"] = host
        seen["loss_at"] = round(time.perf_counter() - started, 1)

    try:
        cfg = load_config(config_path, ray={"address": cluster.address})
        started = time.perf_counter()
        killer = threading.Thread(target=remove_encode_node, daemon=True)
        killer.start()
        report = run_ingest(source, cfg)
        finished.set()
        killer.join(timeout=30)
        seen["seconds"] = round(time.perf_counter() - started, 1)
        seen["report"] = report.model_dump(mode="json")
        seen["encoder_after"] = _encode_actor()
        seen["encode_nodes"] = [n.node_id for n in encode_nodes]
        return seen
    finally:
        ray.shutdown()
        cluster.shutdown()


def _encode_actor() -> dict:
    """The run's one encode actor: its (last) node and how often Ray restarted it."""
    (actor,) = [a for a in ray._private.state.actors().values() if "Encode" in a["ActorClassName"]]
    return {"node": actor["Address"]["NodeID"], "restarts": actor.get("NumRestarts", 0)}


@ray.remote(num_cpus=0)
def _env(name: str) -> str | None:
    return os.environ.get(name)


if __name__ == "__main__":
    if sys.argv[1] == "--lose-encode-node":
        print("RESULT " + json.dumps(lose_encode_node(*sys.argv[2:4])))
    else:
        print("RESULT " + json.dumps(main(*sys.argv[1:4])))
