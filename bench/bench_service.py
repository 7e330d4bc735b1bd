"""The search service on Ray Serve beside the same selection called in-process, at scale.

Builds (or reuses, ``--db``) a synthetic memories table of N clips with ``bench_scale.py``'s
generator through VMem's writer and indexes, creates a read key, starts the real service
(``service.serve.run_service``: Ray Serve on 127.0.0.1, one replica by default), and then,
for 1, 8 and 32 concurrent clients (a bounded load generator on loopback: each client sends
its next question when the last one is answered), measures ``POST /v1/search`` latency and
throughput; beside it, the same questions through an in-process ``QueryStage.select`` one
at a time. Prints one JSON object with the ratios the issue asks for: the service's added
p50 at one client, and its throughput at 32 clients over in-process throughput.

Run: .venv/bin/python bench/bench_service.py --clips 1000000 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from schemas.settings import quiet_third_party  # noqa: E402

quiet_third_party()  # before Ray is imported
os.environ.setdefault("LANCEDB_LOG", "error")

import httpx  # noqa: E402
from ray import serve  # noqa: E402

from actors.query import QueryStage  # noqa: E402
from actors.runtime import bind_model  # noqa: E402
from bench.bench_scale import build, embed, question_texts, say  # noqa: E402
from checkpoints.registry import load_model  # noqa: E402
from schemas.config import RayConfig, ServiceConfig, StorageConfig, VMemConfig  # noqa: E402
from schemas.records import Question  # noqa: E402
from service.auth import KeyStore  # noqa: E402
from service.serve import run_service  # noqa: E402

CLIENTS = (1, 8, 32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentiles(ms: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def load(url: str, key: str, texts: list[str], clients: int, per_client: int) -> dict:
    """``clients`` threads, each sending ``per_client`` searches one after another."""
    times: list[float] = []
    errors = 0
    lock = threading.Lock()

    def client(c: int) -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60.0) as http:
            for i in range(per_client):
                question = texts[(c * per_client + i) % len(texts)]
                t0 = time.perf_counter()
                answer = http.post("/v1/search", json={"question": question})
                ms = 1000.0 * (time.perf_counter() - t0)
                with lock:
                    times.append(ms)
                    errors += answer.status_code != 200

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {**percentiles(times), "qps": round(len(times) / wall, 1), "errors": errors}


def in_process(stage: QueryStage, texts: list[str], n: int) -> dict:
    times = []
    t0 = time.perf_counter()
    for i in range(n):
        s = time.perf_counter()
        stage.select([Question(question=texts[i % len(texts)])])
        times.append(1000.0 * (time.perf_counter() - s))
    wall = time.perf_counter() - t0
    return {**percentiles(times), "qps": round(n / wall, 1)}


def run(args) -> dict:
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="vmem-bench-service-"))
    cfg = VMemConfig(
        storage=StorageConfig(db=str(db)),
        ray=RayConfig(num_cpus=2),
        service=ServiceConfig(replicas=args.replicas, max_queued_requests=256),
    )
    bound = bind_model(cfg)
    model = load_model(bound.checkpoint).eval()
    centre_texts, held = question_texts(args.worlds, 1000, args.seed)
    if not (db / "memories.lance").exists():
        centres = embed(model, centre_texts)
        say(f"building {args.clips:,} clips")
        build(
            argparse.Namespace(clips=args.clips, seed=args.seed, no_anchor=True),
            bound,
            model,
            centres,
            db,
        )
    key = KeyStore(cfg.storage).create("read").key
    stage = QueryStage(bound.checkpoint, bound.encoder, cfg.storage, cfg.query)
    stage.setup()
    for text in held[:20]:  # warm-up
        stage.select([Question(question=text)])
    port = free_port()
    url = run_service(cfg, host="127.0.0.1", port=port, bound=bound)
    say(f"service up at {url}")
    result: dict = {"clips": args.clips, "replicas": args.replicas, "db": str(db)}
    try:
        load(url, key, held, 1, 20)  # warm-up
        for rnd in range(args.rounds):  # the in-process and HTTP runs alternate
            result.setdefault("in_process", []).append(in_process(stage, held, args.requests))
            for clients in CLIENTS:
                per_client = max(1, args.requests // clients) if clients > 1 else args.requests
                row = load(url, key, held, clients, per_client)
                result.setdefault(f"http_{clients}", []).append(row)
                say(f"round {rnd + 1}: {clients} clients {row}")
    finally:
        serve.shutdown()
    best = {k: min(v, key=lambda r: r["p50_ms"]) for k, v in result.items() if isinstance(v, list)}
    result["summary"] = best
    result["ratios"] = {
        "http_1_added_p50_ms": round(best["http_1"]["p50_ms"] - best["in_process"]["p50_ms"], 2),
        "http_32_qps_over_in_process": round(best["http_32"]["qps"] / best["in_process"]["qps"], 3),
    }
    result["machine"] = {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}
    if args.db is None and not args.keep:
        shutil.rmtree(db, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--db", help="an existing database (or an empty folder to build into)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--requests", type=int, default=200, help="searches per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--worlds", type=int, default=2000, help="world seeds of the questions")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
