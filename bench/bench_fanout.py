"""A question fanned out over P partitions of the memories table, beside one table of it all.

Simulates on one machine the fan-out that docs/scale.md designs for 10^9 clips: the synthetic
archive of ``bench_scale.py`` (N clips, real question embeddings as cluster centres) is
written through VMem's writer twice: once into one database, once into P databases, one per
partition of the recording months (24 months over two years, so P = 24 is one partition a
month), each indexed by ``MemoryStore.create_indexes``. Then, interleaved query by query:

- ``one``: the archive-stage search on the single table (top 10);
- ``fanout_serial``: every partition searched in turn in this process, top 10s merged;
- ``fanout_actors``: the partitions split over Ray actors (each searches its share and
  returns its top 10), merged on the driver: the query actor pool's fan-out;
- ``one_window`` / ``fanout_window``: a question about one quarter (3 recording months),
  as a WHERE on the single table, and as a fan-out over only the partitions that quarter
  covers (partition pruning).

Recall@10 of every path against exact search over all N clips. Prints one JSON object.

Run: .venv/bin/python bench/bench_fanout.py --clips 1000000 --partitions 24 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from schemas.settings import quiet_third_party  # noqa: E402

quiet_third_party()  # before Ray is imported
os.environ.setdefault("LANCEDB_LOG", "error")

import ray  # noqa: E402

from actors.runtime import bind_model, ensure_ray  # noqa: E402
from actors.writer import MemoryWriter  # noqa: E402
from bench.bench_scale import (  # noqa: E402
    FIRST_DAY,
    VIDEOS_PER_BATCH,
    HeadInverse,
    Truth,
    embed,
    interleaved,
    memory_records,
    question_texts,
    recall,
    say,
    synthetic_videos,
)
from checkpoints.registry import load_model  # noqa: E402
from models.select import archive_keys, archive_queries  # noqa: E402
from schemas.config import RayConfig, StorageConfig, VMemConfig  # noqa: E402
from schemas.records import VideoOutcome  # noqa: E402
from storage.db import sql_literal  # noqa: E402
from storage.memories import MemoryStore  # noqa: E402

MONTHS = 24  # the generator spreads recorded_at over two years
WINDOW_MONTHS = (6, 7, 8)  # the windowed questions' quarter: months 6-8 after FIRST_DAY
COLUMNS = ["video_id", "clip_index"]


def month_of(task) -> int:
    """Months since FIRST_DAY of a video's recording time (0..23)."""
    at = task.modified_at
    return min(MONTHS - 1, (at.year - FIRST_DAY.year) * 12 + at.month - FIRST_DAY.month)


def partition_of(month: int, partitions: int) -> int:
    return month * partitions // MONTHS


def month_start(month: int):
    year, index = divmod(FIRST_DAY.month - 1 + month, 12)
    return FIRST_DAY.replace(year=FIRST_DAY.year + year, month=index + 1)


def build(args, bound, model, centres, root: Path):
    """Write the archive into one database and into P partition databases; index each.
    Returns (truth, each row's recording month, the P partition stores, timings)."""
    _, tokens_per_clip, _ = bound.dims
    q = model.config.indicator_dim
    clip_s = bound.config.decode.clip_frames / bound.config.decode.sample_fps
    head = model.streaming.indicator_head
    inverse = HeadInverse(head.weight.detach().numpy(), head.bias.detach().numpy())

    def writer(path: Path) -> MemoryWriter:
        cfg = StorageConfig(db=str(path), commit_videos=VIDEOS_PER_BATCH)
        return MemoryWriter(cfg, bound.encoder, bound.dims)

    single = writer(root / "one")
    parts = [writer(root / f"p{p:02d}") for p in range(args.partitions)]
    truths, months = [], []
    timing = {"write_one_s": 0.0, "write_partitions_s": 0.0}
    for batch in synthetic_videos(args.clips, args.seed, centres, tokens_per_clip):
        memory, tokens = inverse.memories(batch.tokens)
        n = len(tokens)
        keys = archive_keys(tokens.reshape(n, tokens_per_clip * q), q)
        per_video = memory_records(batch, memory, keys, clip_s)
        truths.append(Truth.of_batch(batch, tokens))
        months.append(np.repeat([month_of(t) for t in batch.tasks], batch.counts))
        t0 = time.perf_counter()
        for task, records in zip(batch.tasks, per_video, strict=True):
            single.add(VideoOutcome(task, "done", n_clips=len(records)), records)
        single.flush()
        t1 = time.perf_counter()
        for task, records in zip(batch.tasks, per_video, strict=True):
            target = parts[partition_of(month_of(task), args.partitions)]
            target.add(VideoOutcome(task, "done", n_clips=len(records)), records)
        for part in parts:
            part.flush()
        timing["write_one_s"] += t1 - t0
        timing["write_partitions_s"] += time.perf_counter() - t1
        say(f"wrote {batch.first_row + n:,} clips twice")
    t0 = time.perf_counter()
    single.store.create_indexes()
    timing["build_one_s"] = time.perf_counter() - t0
    builds = []
    for part in parts:
        t0 = time.perf_counter()
        part.store.create_indexes()
        builds.append(time.perf_counter() - t0)
    timing["build_partitions_total_s"] = sum(builds)
    timing["build_partition_max_s"] = max(builds)  # a cluster builds them side by side
    rows = [part.store.table.count_rows() for part in parts]
    timing["partition_clips_min_max"] = [min(rows), max(rows)]
    say(f"indexed: one table {timing['build_one_s']:.1f} s, partitions {sum(builds):.1f} s")
    return (
        Truth.concat(truths),
        np.concatenate(months),
        single.store,
        [p.store for p in parts],
        timing,
    )


@ray.remote(num_cpus=0.5)
class PartitionSearcher:
    """A query actor holding some partitions of the archive: searches them, merges its top."""

    def __init__(self, dbs: list[str]) -> None:
        self.stores = [MemoryStore(StorageConfig(db=db)) for db in dbs]
        self.names = dbs

    def search(self, key: np.ndarray, where: str | None, limit: int, only: list[str] | None):
        hits = [
            store.search(key, where, limit, COLUMNS)
            for store, name in zip(self.stores, self.names, strict=True)
            if only is None or name in only
        ]
        return merge(hits, limit)


def merge(hits: list[pa.Table], limit: int) -> pa.Table:
    """The best ``limit`` rows of several partitions' hits, by score."""
    table = pa.concat_tables([h.select([*COLUMNS, "score"]) for h in hits if h.num_rows])
    order = np.argsort(-table["score"].to_numpy(), kind="stable")[:limit]
    return table.take(pa.array(order))


def measure(args, truth, row_months, single, parts, queries) -> dict:
    keys = archive_queries(queries)
    names = [str(p.cfg.db) for p in parts]
    window = [names[p] for p in sorted({partition_of(m, args.partitions) for m in WINDOW_MONTHS})]
    start, end = month_start(WINDOW_MONTHS[0]), month_start(WINDOW_MONTHS[-1] + 1)
    within = (
        f"recorded_at >= timestamp {sql_literal(start.strftime('%Y-%m-%d %H:%M:%S'))} AND "
        f"recorded_at < timestamp {sql_literal(end.strftime('%Y-%m-%d %H:%M:%S'))}"
    )
    exact_window_rows = np.isin(row_months, WINDOW_MONTHS)
    ensure_ray(RayConfig(num_cpus=2))
    shares = [names[a :: args.actors] for a in range(args.actors)]
    actors = [PartitionSearcher.remote(share) for share in shares]

    def fan_actors(i: int, only: list[str] | None = None, where: str | None = None):
        futures = [a.search.remote(keys[i], where, 10, only) for a in actors]
        return truth.rows(merge(ray.get(futures), 10))

    def fan_serial(i: int) -> np.ndarray:
        return truth.rows(merge([p.search(keys[i], None, 10, COLUMNS) for p in parts], 10))

    ops = {
        "one": lambda i: truth.rows(single.search(keys[i], None, 10, COLUMNS)),
        "fanout_serial": fan_serial,
        "fanout_actors": fan_actors,
        "one_window": lambda i: truth.rows(single.search(keys[i], within, 10, COLUMNS)),
        # partitions outside the window hold no row of it: pruned, not searched
        "fanout_window": lambda i: fan_actors(i, window, within),
    }
    n = len(queries)
    say(f"measuring {', '.join(ops)} over {n} queries x {args.rounds} rounds")
    times, results = interleaved(ops, n, args.rounds)
    exact = [truth.top(queries[i]) for i in range(n)]
    means = truth.means
    exact_window = []
    for i in range(n):
        scores = np.where(exact_window_rows, means @ queries[i], -np.inf)
        best = np.argpartition(-scores, 10)[:10]
        exact_window.append(best[np.argsort(-scores[best])])
    out: dict = {"window": within, "window_partitions": len(window)}
    for name, ms in times.items():
        out[f"{name}_p50_ms"] = round(float(np.percentile(ms, 50)), 2)
        out[f"{name}_p99_ms"] = round(float(np.percentile(ms, 99)), 2)
        truth_of = exact_window if "window" in name else exact
        out[f"{name}_recall_at_10"] = round(recall(results[name], truth_of), 4)
    for a in actors:
        ray.kill(a)
    return out


def run(args) -> dict:
    root = Path(tempfile.mkdtemp(prefix="vmem-bench-fanout-"))
    bound = bind_model(VMemConfig(storage=StorageConfig(db=str(root / "one"))))
    model = load_model(bound.checkpoint).eval()
    centre_texts, held_texts = question_texts(args.worlds, args.queries, args.seed)
    centres = embed(model, centre_texts)
    queries = embed(model, held_texts[: args.queries])
    truth, months, single, parts, timing = build(args, bound, model, centres, root)
    result = {"clips": int(len(truth.means)), "partitions": args.partitions, **timing}
    result.update(measure(args, truth, months, single, parts, queries))
    result["ratios"] = {
        "fanout_actors_over_one_p50": round(
            result["fanout_actors_p50_ms"] / result["one_p50_ms"], 3
        ),
        "fanout_window_over_one_window_p50": round(
            result["fanout_window_p50_ms"] / result["one_window_p50_ms"], 3
        ),
        "build_partition_max_over_one": round(
            result["build_partition_max_s"] / result["build_one_s"], 3
        ),
    }
    result["machine"] = {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}
    ray.shutdown()
    shutil.rmtree(root, ignore_errors=True)
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=24, help="1 to 24 (months grouped)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=200, help="held-out questions timed")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds over the queries")
    parser.add_argument("--actors", type=int, default=2, help="query actors the fan-out uses")
    parser.add_argument("--worlds", type=int, default=2000, help="world seeds of the questions")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    if not 1 <= args.partitions <= MONTHS:
        raise SystemExit(f"--partitions must be 1 to {MONTHS}, got {args.partitions}")
    result = run(args)
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
