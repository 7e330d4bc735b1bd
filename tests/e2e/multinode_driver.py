"""Driver of tests/e2e/test_multinode.py, run in a process of its own (a Ray cluster of
several nodes next to the test session's local Ray would not mix): starts a Ray cluster of
three nodes on loopback (``ray.cluster_utils.Cluster``), ingests SOURCE with the config
file's settings through it, tries a local folder too, and prints what it saw as JSON.

    python tests/e2e/multinode_driver.py CONFIG SOURCE LOCAL_FOLDER
"""

from __future__ import annotations

import json
import os
import sys

import ray
from ray.cluster_utils import Cluster

from flows.ingest import ingest_flow
from schemas.config import load_config
from storage.archive import ArchiveError

STORE = 100 * 1024 * 1024  # object store per node (bytes): small, three nodes share a box


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


@ray.remote(num_cpus=0)
def _env(name: str) -> str | None:
    return os.environ.get(name)


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(*sys.argv[1:4])))
