"""VMem's query path at archive scale, beside plain LanceDB tuned by hand, on the same data.

Builds a synthetic ``memories`` table of N clips through VMem's own writer and index path
(``actors.writer.MemoryWriter``, ``MemoryStore.create_indexes``): about 62 clips per video,
20 archives of falling size, two years of ``recorded_at``, tags; per clip M unit token
indicators clustered around a few cluster centres per video, the centres being real question
embeddings from the bundled question encoder (so held-out questions land near data). Each
token's memory row is solved through the model's indicator head, so the indicators the
video stage reads back from the stored int8 memory are the tokens the archive key was
made from. The anchor is a second table in the same database holding the M per-token
indicators side by side (512 float32), with an IVF_PQ index tuned by hand and searched with
the question repeated M times: the same ranking as VMem's archive key, exactly.

Then, interleaved query by query and repeated after a warm-up: VMem's ANN search and the
anchor's (unfiltered and with an archive filter) against exact numpy top-10, the whole ask
(``QueryStage.select``: encode, search, video stage) with and without a WHERE, and 10,000
questions through a pool of Ray query actors (and through one in-process stage).
Prints one JSON object (``--json``); progress goes to stderr.

Run: .venv/bin/python bench/bench_scale.py --clips 1000000 --seed 0 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from schemas.settings import quiet_third_party

quiet_third_party()  # this script is an entry point: before Ray is imported
# Lance warns once per PQ sub-vector whose k-means finds few distinct values: the archive
# keys' zero padding does that on purpose (dozens of lines per index build)
os.environ.setdefault("LANCEDB_LOG", "error")

import ray  # noqa: E402
import torch  # noqa: E402
from lancedb.index import Bitmap, IvfPq  # noqa: E402

from actors.query import QueryStage, make_query_pool  # noqa: E402
from actors.runtime import bind_model, ensure_ray  # noqa: E402
from actors.writer import MemoryWriter  # noqa: E402
from checkpoints.registry import load_model  # noqa: E402
from models.select import archive_keys, archive_queries  # noqa: E402
from schemas.config import QueryConfig, RayConfig, StorageConfig, VMemConfig  # noqa: E402
from schemas.records import MemoryRecord, Question, VideoOutcome, VideoTask  # noqa: E402
from schemas.tables import MEMORIES  # noqa: E402
from storage.memories import NPROBES, MemoryStore  # noqa: E402
from world.questions import make_questions  # noqa: E402
from world.scenes import make_world  # noqa: E402

CLIPS_PER_VIDEO = 62  # on average; a video holds 50 to 74 clips
N_ARCHIVES = 20  # archive k holds a share proportional to 1/(k+1) of the videos
FILTER_ARCHIVE = 2  # "a02": about 9 % of the clips, the filtered measurements' WHERE
TAGS = {"indoor": 0.30, "outdoor": 0.50, "sports": 0.10, "dashcam": 0.05, "night": 0.01}
FIRST_DAY = datetime(2023, 1, 1, tzinfo=UTC)
SPAN_S = 2 * 365 * 86400  # recorded_at spreads over two years
CLIP_NOISE, TOKEN_NOISE = 0.04, 0.06  # per-dimension std around a centre: clip, then token
VIDEOS_PER_BATCH = 256  # generated at a time; also the writer's commit_videos
HEAD_RCOND = 1e-2  # the head's singular values below 1 % of the largest are not inverted
HEAD_SCALE = 1.0  # |W m + b| of the solved memories: magnitudes like the trained encoder's
ANCHOR = "anchor"  # the hand-tuned table's name
ANCHOR_SUB_VECTORS = 128  # 4-d sub-vectors of 8-bit codes over the 512-d indicators
ANCHOR_REFINE = 20  # the anchor re-ranks 20x its 10 results (with nprobes 40: recall 0.98+)
BULK_DISTINCT = 1000  # held-out question texts (the first --queries time the single asks)
BULK_CHUNK = 256  # questions per query-actor call, as the answer flow sends them
WARMUP = 20  # queries through every measured path before timing


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def normalize(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


# ---- the synthetic archive (tests/storage/test_scale_index.py reuses it) -------------------
@dataclass
class VideoBatch:
    """Some consecutive videos of the synthetic archive and their clips' token indicators."""

    tasks: list[VideoTask]
    counts: np.ndarray  # (V,) clips per video
    tokens: np.ndarray  # (R, M, Q) unit token indicators, R = counts.sum()
    first_row: int  # the archive-wide row of the batch's first clip


def clip_counts(n_clips: int, rng: np.random.Generator) -> np.ndarray:
    """Clips per video, ``n_clips // 62`` videos of 50-74 clips, summing to ``n_clips``."""
    n_videos = max(1, n_clips // CLIPS_PER_VIDEO)
    counts = rng.integers(CLIPS_PER_VIDEO - 12, CLIPS_PER_VIDEO + 13, size=n_videos)
    missing = n_clips - int(counts.sum())
    counts += missing // n_videos
    counts[: missing % n_videos] += 1
    if counts.min() < 1:
        raise ValueError(f"{n_clips} clips are too few for {n_videos} videos")
    return counts


def video_task(index: int, rng: np.random.Generator) -> VideoTask:
    """Video ``index``: its archive (skewed sizes), recording time and tags."""
    weights = 1.0 / np.arange(1, N_ARCHIVES + 1)
    archive = int(rng.choice(N_ARCHIVES, p=weights / weights.sum()))
    video_id = f"v{index:07d}"
    return VideoTask(
        uri=f"s3://archive-{archive:02d}/{video_id}.mp4",
        size=int(rng.integers(10**7, 10**9)),
        etag=f"e{index}",
        archive=f"a{archive:02d}",
        modified_at=FIRST_DAY + timedelta(seconds=int(rng.integers(0, SPAN_S))),
        tags=tuple(tag for tag, share in TAGS.items() if rng.random() < share),
        video_id=video_id,
    )


def video_tokens(
    rng: np.random.Generator, centres: np.ndarray, n_clips: int, tokens: int
) -> np.ndarray:
    """(n_clips, tokens, Q) unit indicators of one video: the video draws 2-6 centres, each
    clip one of them plus clip noise, each token the clip's direction plus token noise."""
    own = centres[rng.choice(len(centres), size=int(rng.integers(2, 7)), replace=False)]
    picked = own[rng.integers(0, len(own), size=n_clips)]  # (n, Q)
    direction = normalize(picked + CLIP_NOISE * rng.standard_normal(picked.shape))
    noise = TOKEN_NOISE * rng.standard_normal((n_clips, tokens, centres.shape[1]))
    return normalize(direction[:, None, :] + noise).astype(np.float32)


def synthetic_videos(
    n_clips: int, seed: int, centres: np.ndarray, tokens: int, videos_per_batch: int = 256
) -> Iterator[VideoBatch]:
    """The archive of ``n_clips`` clips, generated lazily ``videos_per_batch`` videos at a time."""
    rng = np.random.default_rng(seed)
    counts = clip_counts(n_clips, rng)
    row = 0
    for first in range(0, len(counts), videos_per_batch):
        part = counts[first : first + videos_per_batch]
        tasks = [video_task(first + i, rng) for i in range(len(part))]
        clips = [video_tokens(rng, centres, int(n), tokens) for n in part]
        yield VideoBatch(tasks, part, np.concatenate(clips), row)
        row += int(part.sum())


def memory_records(
    batch: VideoBatch, memory: np.ndarray, keys: np.ndarray, clip_s: float
) -> list[list[MemoryRecord]]:
    """Each video's records: clip i spans [i, i+1) * clip_s; memory (R, M, D), keys (R, W)."""
    out, row = [], 0
    for task, n in zip(batch.tasks, batch.counts.tolist(), strict=True):
        out.append(
            [
                MemoryRecord(
                    task.video_id, i, i * clip_s, (i + 1) * clip_s, keys[row + i], memory[row + i]
                )
                for i in range(n)
            ]
        )
        row += n
    return out


class HeadInverse:
    """Memories whose indicators, read through the model's head, are given tokens.

    ``normalize(W m + b) = t`` is solved for m with the head's pseudo-inverse, leaving out
    singular values below ``HEAD_RCOND`` of the largest: inverting those too would make m
    hundreds of times larger than a real memory, and its int8 rounding would turn the
    indicators read back into noise. What the head then reads from m (``realised``, within
    a cosine of 0.99 of t) is what the archive key and the ground truth are made of, as the
    encoder makes its keys from the indicators of the memories it stores."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.weight = weight.astype(np.float32)  # (Q, D)
        self.bias = bias.astype(np.float32)  # (Q,)
        solve = np.linalg.pinv(weight.astype(np.float64), rcond=HEAD_RCOND)
        self.solve = solve.astype(np.float32)  # (D, Q)

    def memories(self, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(R, M, Q) unit tokens -> memory (R, M, D), realised unit tokens (R, M, Q)."""
        memory = (HEAD_SCALE * tokens - self.bias) @ self.solve.T
        return memory, normalize(memory @ self.weight.T + self.bias).astype(np.float32)


# ---- questions ------------------------------------------------------------------------------
def question_texts(worlds: int, held_out: int, seed: int) -> tuple[list[str], list[str]]:
    """Distinct questions of the procedural world's first ``worlds`` seeds: (cluster-centre
    texts, ``held_out`` query texts none of the centres is)."""
    texts: set[str] = set()
    for world_seed in range(worlds):
        texts.update(q.question for q in make_questions(make_world(world_seed, 240.0), world_seed))
    ordered = sorted(texts)
    order = np.random.default_rng(seed).permutation(len(ordered))
    held = min(held_out, len(ordered) // 2)
    return [ordered[i] for i in order[held:]], [ordered[i] for i in order[:held]]


def embed(model, texts: list[str], batch: int = 512) -> np.ndarray:
    """(N, Q) unit question embeddings from the model's question encoder."""
    with torch.inference_mode():
        parts = [model.encode_questions(texts[i : i + batch]) for i in range(0, len(texts), batch)]
    return normalize(torch.cat(parts).float().numpy())


# ---- build ----------------------------------------------------------------------------------
@dataclass
class Truth:
    """What exact search needs: each row's mean token, archive, and the rows of each video."""

    means: np.ndarray  # (N, Q) float32
    archive: np.ndarray  # (N,) int8
    first_row: np.ndarray  # (V,) the row of each video's clip 0

    def rows(self, hits: pa.Table) -> np.ndarray:
        """Archive-wide rows of search hits holding ``video_id`` and ``clip_index``."""
        videos = np.array([int(v[1:]) for v in hits["video_id"].to_pylist()], dtype=np.int64)
        return self.first_row[videos] + hits["clip_index"].to_numpy()

    def top(self, query: np.ndarray, k: int = 10, archive: int | None = None) -> np.ndarray:
        """The exact top-k rows of a unit (Q,) query by q . mean (within one archive)."""
        scores = self.means @ query
        if archive is not None:
            scores = np.where(self.archive == archive, scores, -np.inf)
        best = np.argpartition(-scores, k)[:k]
        return best[np.argsort(-scores[best])]

    @classmethod
    def of_batch(cls, batch: VideoBatch, tokens: np.ndarray) -> Truth:
        """One batch's part, from the tokens (R, M, Q) its keys were made of."""
        archive = np.repeat([int(t.archive[1:]) for t in batch.tasks], batch.counts)
        first_row = batch.first_row + np.r_[0, np.cumsum(batch.counts)[:-1]]
        return cls(tokens.mean(axis=1), archive.astype(np.int8), first_row)

    @classmethod
    def concat(cls, parts: list[Truth]) -> Truth:
        return cls(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("means", "archive", "first_row")
            )
        )


def build(args, bound, model, centres: np.ndarray, db: Path) -> tuple[Truth, dict]:
    """Write the archive through VMem's writer (and the anchor table beside it); index both."""
    _, tokens_per_clip, _ = bound.dims
    q = model.config.indicator_dim
    clip_s = bound.config.decode.clip_frames / bound.config.decode.sample_fps
    head = model.streaming.indicator_head
    inverse = HeadInverse(head.weight.detach().numpy(), head.bias.detach().numpy())
    storage = StorageConfig(db=str(db), commit_videos=VIDEOS_PER_BATCH)
    writer = MemoryWriter(storage, bound.encoder, bound.dims)
    anchor = None
    parts: list[Truth] = []
    timing = {"generate_s": 0.0, "write_s": 0.0, "anchor_write_s": 0.0}
    started = time.perf_counter()
    videos = synthetic_videos(args.clips, args.seed, centres, tokens_per_clip, VIDEOS_PER_BATCH)
    for batch in videos:
        t0 = time.perf_counter()
        memory, tokens = inverse.memories(batch.tokens)
        n = len(tokens)
        keys = archive_keys(tokens.reshape(n, tokens_per_clip * q), q)
        per_video = memory_records(batch, memory, keys, clip_s)
        parts.append(Truth.of_batch(batch, tokens))
        t1 = time.perf_counter()
        for task, records in zip(batch.tasks, per_video, strict=True):
            writer.add(VideoOutcome(task, "done", n_clips=len(records)), records)
        writer.flush()
        t2 = time.perf_counter()
        if not args.no_anchor:
            rows = anchor_rows(batch.first_row, tokens, parts[-1].archive)
            if anchor is None:
                anchor = writer.store.db.create_table(ANCHOR, rows)
            else:
                anchor.add(rows)
        t3 = time.perf_counter()
        timing["generate_s"] += t1 - t0
        timing["write_s"] += t2 - t1
        timing["anchor_write_s"] += t3 - t2
        done = batch.first_row + n
        if done // 100_000 != batch.first_row // 100_000 or done == args.clips:
            say(f"wrote {done:,} clips ({time.perf_counter() - started:.0f} s; {_fmt(timing)})")
    truth = Truth.concat(parts)
    timing["commits"] = writer.commits
    timing.update(build_indexes(writer.store, anchor))
    return truth, timing


def anchor_rows(first_row: int, tokens: np.ndarray, archive: np.ndarray) -> pa.Table:
    """The anchor's rows: id (the archive-wide row), archive, the M token indicators (M*Q)."""
    n = len(tokens)
    flat = pa.array(tokens.reshape(-1), pa.float32())
    return pa.table(
        {
            "id": pa.array(np.arange(first_row, first_row + n, dtype=np.int64)),
            "archive": pa.array([f"a{a:02d}" for a in archive.tolist()], pa.string()),
            "indicator": pa.FixedSizeListArray.from_arrays(flat, tokens[0].size),
        }
    )


def build_indexes(store: MemoryStore, anchor) -> dict:
    """VMem's ``create_indexes`` (scalar + IVF_PQ on the archive keys), then the anchor's
    IVF_PQ over the 512-d indicators (cosine, 4-d sub-vectors, 8-bit codes) and BITMAP."""
    out: dict = {}
    say("building VMem's indexes (MemoryStore.create_indexes)")
    t0 = time.perf_counter()
    out["build_indexes"] = store.create_indexes()
    out["build_s"] = time.perf_counter() - t0
    if "index archive_key" not in out["build_indexes"]:
        say(f"warning: no ANN index was built: {out['build_indexes']}")
    if anchor is None:
        return out
    say("building the anchor's IVF_PQ")
    t0 = time.perf_counter()
    config = IvfPq(distance_type="cosine", num_sub_vectors=ANCHOR_SUB_VECTORS)
    anchor.create_index("indicator", config=config)
    out["anchor_build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    anchor.create_index("archive", config=Bitmap())
    out["anchor_scalar_build_s"] = time.perf_counter() - t0
    return out


def _fmt(values: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in values.items() if isinstance(v, float))


# ---- measure --------------------------------------------------------------------------------
def interleaved(ops: dict[str, Callable[[int], object]], n: int, rounds: int) -> tuple[dict, dict]:
    """Run every op on queries 0..n-1, query by query, the ops' order rotating, ``rounds``
    times after a warm-up. Returns (op -> milliseconds of every call, op -> last results)."""
    names = list(ops)
    for i in range(min(WARMUP, n)):
        for name in names:
            ops[name](i)
    times: dict[str, list[float]] = {name: [] for name in names}
    results: dict[str, list] = {name: [None] * n for name in names}
    for r in range(rounds):
        for i in range(n):
            shift = (r + i) % len(names)
            for name in names[shift:] + names[:shift]:
                t0 = time.perf_counter()
                results[name][i] = ops[name](i)
                times[name].append(1000.0 * (time.perf_counter() - t0))
        say(
            f"round {r + 1}/{rounds}: "
            + ", ".join(f"{k} p50 {np.median(v):.1f} ms" for k, v in times.items())
        )
    return times, results


def recall(found: list[np.ndarray], exact: list[np.ndarray]) -> float:
    hits = [
        len(set(f.tolist()) & set(e.tolist())) / len(e) for f, e in zip(found, exact, strict=True)
    ]
    return float(np.mean(hits))


def measure_queries(
    args, bound, db: Path, truth: Truth, queries: np.ndarray, texts: list[str]
) -> dict:
    """ANN (VMem, anchor), whole asks, with and without the archive filter, interleaved."""
    storage = StorageConfig(db=str(db))
    store = MemoryStore(storage)
    stage = QueryStage(bound.checkpoint, bound.encoder, storage, QueryConfig())
    stage.setup()
    where = f"archive = 'a{FILTER_ARCHIVE:02d}'"
    keys = archive_queries(queries)
    tokens_per_clip = bound.dims[1]

    def vmem_ann(i: int, filtered: bool = False) -> np.ndarray:
        hits = store.search(keys[i], where if filtered else None, 10, ["video_id", "clip_index"])
        return truth.rows(hits)

    def ask(i: int, filtered: bool = False) -> int:
        (result,) = stage.select([Question(question=texts[i], where=where if filtered else None)])
        if result.error is not None:
            raise RuntimeError(f"ask failed: {result.error}")
        return len(result.clips)

    ops: dict[str, Callable[[int], object]] = {
        "ann": vmem_ann,
        "filtered_ann": lambda i: vmem_ann(i, True),
        "ask": ask,
        "filtered": lambda i: ask(i, True),
    }
    if not args.no_anchor:
        anchor = store.db.open_table(ANCHOR)

        def anchor_ann(i: int, filtered: bool = False) -> np.ndarray:
            query = (
                anchor.search(np.tile(queries[i], tokens_per_clip), vector_column_name="indicator")
                .distance_type("cosine")
                .nprobes(NPROBES)
                .refine_factor(ANCHOR_REFINE)
                .limit(10)
                .select(["id", "_distance"])
            )
            if filtered:
                query = query.where(where, prefilter=True)
            return query.to_arrow()["id"].to_numpy()

        ops["anchor"] = anchor_ann
        ops["anchor_filtered"] = lambda i: anchor_ann(i, True)
    n = len(queries)
    say(f"measuring {', '.join(ops)} over {n} queries x {args.rounds} rounds")
    times, results = interleaved(ops, n, args.rounds)
    exact = [truth.top(queries[i]) for i in range(n)]
    exact_filtered = [truth.top(queries[i], archive=FILTER_ARCHIVE) for i in range(n)]
    out: dict = {"filter": where, "filter_share": float(np.mean(truth.archive == FILTER_ARCHIVE))}
    for name, ms in times.items():
        out[f"{name}_p50_ms"] = round(float(np.percentile(ms, 50)), 2)
        out[f"{name}_p99_ms"] = round(float(np.percentile(ms, 99)), 2)
    for name in ("ann", "anchor"):
        if name in results:
            out[f"{name}_recall_at_10"] = recall(results[name], exact)
    for name, key in (("filtered_ann", "filtered"), ("anchor_filtered", "anchor_filtered")):
        if name in results:
            out[f"{key}_recall_at_10"] = recall(results[name], exact_filtered)
    out["ask_clips_mean"] = float(np.mean(results["ask"]))
    out["filtered_clips_mean"] = float(np.mean(results["filtered"]))
    return out


def measure_bulk(args, bound, db: Path, texts: list[str]) -> dict:
    """``--bulk`` questions in chunks of 256: through the Ray query-actor pool, then through
    one in-process ``QueryStage``: questions per second, and each actor's resident memory."""
    storage = StorageConfig(db=str(db))
    questions = [Question(question=texts[i % len(texts)], id=f"q{i}") for i in range(args.bulk)]
    chunks = [questions[i : i + BULK_CHUNK] for i in range(0, len(questions), BULK_CHUNK)]
    ensure_ray(RayConfig(num_cpus=2))
    pool = make_query_pool(args.actors, bound.checkpoint, bound.encoder, storage, QueryConfig())
    list(pool.map(lambda actor, chunk: actor.select.remote(chunk), chunks[:2]))  # warm-up
    say(f"bulk: {len(questions):,} questions through {args.actors} query actors")
    t0 = time.perf_counter()
    answered = list(pool.map_unordered(lambda actor, chunk: actor.select.remote(chunk), chunks))
    wall = time.perf_counter() - t0
    out = {
        "bulk_questions": len(questions),
        "bulk_actors": args.actors,
        "bulk_s": round(wall, 2),
        "bulk_qps": round(len(questions) / wall, 1),
        "bulk_errors": sum(r.error is not None for part in answered for r in part),
        "bulk_actor_rss_mb": actor_rss_mb(pool),
    }
    ray.shutdown()
    stage = QueryStage(bound.checkpoint, bound.encoder, storage, QueryConfig())
    stage.select(chunks[0])  # warm-up
    say(f"bulk: {len(questions):,} questions through one in-process QueryStage")
    t0 = time.perf_counter()
    for chunk in chunks:
        stage.select(chunk)
    wall = time.perf_counter() - t0
    out["bulk_inprocess_s"] = round(wall, 2)
    out["bulk_inprocess_qps"] = round(len(questions) / wall, 1)
    return out


def actor_rss_mb(pool: ray.util.ActorPool) -> list[float]:
    """Resident memory of each (idle) actor of the pool, in MB."""
    actors = []
    while pool.has_free():
        actors.append(pool.pop_idle())
    pids = ray.get([a.__ray_call__.remote(lambda self: os.getpid()) for a in actors])
    for actor in actors:
        pool.push(actor)
    return [resident_mb(pid) for pid in pids]


def resident_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux: VmRSS of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def measure_storage(bound, db: Path, truth: Truth) -> dict:
    """Bytes per video-hour of the memories table as written and once compacted (old
    versions dropped), by column, and the paper's budget for the same video."""
    clip_s = bound.config.decode.clip_frames / bound.config.decode.sample_fps
    hours = len(truth.means) * clip_s / 3600.0
    folder = db / f"{MEMORIES}.lance"
    raw = folder_bytes(folder)
    store = MemoryStore(StorageConfig(db=str(db)))
    say("compacting the memories table (optimize, old versions dropped)")
    t0 = time.perf_counter()
    compact(store.table)
    compact_s = time.perf_counter() - t0
    anchor_folder = db / f"{ANCHOR}.lance"
    if anchor_folder.exists():  # the anchor's 64 appends too: both tables are read alike
        compact(store.db.open_table(ANCHOR))
    compacted = folder_bytes(folder)
    index_bytes = folder_bytes(folder / "_indices") if (folder / "_indices").exists() else 0
    per_clip = {
        name: round(size / len(truth.means), 1)
        for name, size in column_bytes(store.table.to_lance()).items()
    }
    m, tokens = 64, 2560  # the paper's memory: 64 tokens of 2560 values per 16-frame clip
    paper_clip = m * tokens + m * 4 + 80 * 4  # int8 tokens + float32 scales + the key
    return {
        "video_hours": round(hours, 1),
        "clip_s": clip_s,
        "bytes_raw": raw,
        "bytes_compacted": compacted,
        "index_bytes": index_bytes,  # files under _indices
        "index_bytes_live": sum(ix.size_bytes or 0 for ix in store.table.list_indices()),
        "bytes_per_video_hour_raw": round(raw / hours),
        "bytes_per_video_hour": round(compacted / hours),
        "bytes_per_clip_by_column": per_clip,
        "paper_budget_bytes_per_video_hour": round(paper_clip * 3600 / 16),
        "anchor_bytes_per_video_hour": round(folder_bytes(anchor_folder) / hours)
        if anchor_folder.exists()
        else None,
        "compact_s": round(compact_s, 1),
    }


def compact(table) -> None:
    """One fragment per million rows, the indexes remapped, every older version dropped."""
    with warnings.catch_warnings():  # "removes every version": nothing else reads this table
        warnings.simplefilter("ignore", UserWarning)
        table.optimize(cleanup_older_than=timedelta(0), delete_unverified=True)


def column_bytes(dataset) -> dict[str, int]:
    """Bytes on disk of each top-level column of a Lance dataset (its children included)."""
    by_id = {f.id: f.bytes_on_disk for f in dataset.stats.data_stats().fields}
    out = {}
    for field in dataset.lance_schema.fields():
        ids = [field.id(), *(child.id() for child in field.children())]
        out[field.name()] = sum(by_id.get(i, 0) for i in ids)
    return out


# ---- the run --------------------------------------------------------------------------------
def run(args) -> dict:
    db = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="vmem-bench-scale-"))
    if (db / f"{MEMORIES}.lance").exists():
        raise SystemExit(f"{db} already holds a {MEMORIES} table: give an empty --db")
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        phases[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    bound = bind_model(VMemConfig(storage=StorageConfig(db=str(db))))
    model = load_model(bound.checkpoint).eval()
    centre_texts, held_texts = question_texts(
        args.worlds, max(BULK_DISTINCT, args.queries), args.seed
    )
    centres = embed(model, centre_texts)
    queries = embed(model, held_texts[: args.queries])
    say(f"{len(centre_texts):,} centre questions, {len(held_texts):,} held out")
    phase("questions_s")
    truth, timing = build(args, bound, model, centres, db)
    phase("build_total_s")
    result = {
        "clips": int(len(truth.means)),
        "videos": int(len(truth.first_row)),
        "seed": args.seed,
        "centres": len(centres),
        "queries": len(queries),
        **{k: round(v, 2) if isinstance(v, float) else v for k, v in timing.items()},
    }
    if args.compact_first:  # the table as the next create_indexes leaves it
        result.update(measure_storage(bound, db, truth))
        phase("storage_s")
    result.update(measure_queries(args, bound, db, truth, queries, held_texts))
    phase("queries_s")
    if args.bulk:
        result.update(measure_bulk(args, bound, db, held_texts))
        phase("bulk_s")
    if not args.compact_first:
        result.update(measure_storage(bound, db, truth))
        phase("storage_s")
    result["compacted_before_queries"] = args.compact_first
    result["ratios"] = ratios(result)
    result["phases_s"] = phases
    result["machine"] = {"cpus": os.cpu_count(), "load_avg": [round(x, 2) for x in os.getloadavg()]}
    if args.db is None and not args.keep:
        shutil.rmtree(db, ignore_errors=True)
    else:
        result["db"] = str(db)
    return result


def ratios(r: dict) -> dict:
    """VMem over the anchor (below 1: VMem is faster or smaller)."""
    pairs = {
        "ann_p50": ("ann_p50_ms", "anchor_p50_ms"),
        "ann_p99": ("ann_p99_ms", "anchor_p99_ms"),
        "filtered_ann_p50": ("filtered_ann_p50_ms", "anchor_filtered_p50_ms"),
        "build": ("build_s", "anchor_build_s"),
        "bulk_actors_over_inprocess_qps": ("bulk_qps", "bulk_inprocess_qps"),
    }
    return {name: round(r[a] / r[b], 3) for name, (a, b) in pairs.items() if r.get(a) and r.get(b)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--db", help="database folder (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database")
    parser.add_argument("--queries", type=int, default=200, help="held-out questions timed")
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds over the queries")
    parser.add_argument(
        "--bulk", type=int, default=10_000, help="questions of the bulk run (0: skip)"
    )
    parser.add_argument("--actors", type=int, default=QueryConfig().num_actors)
    parser.add_argument(
        "--worlds", type=int, default=2000, help="world seeds the questions come from"
    )
    parser.add_argument(
        "--no-anchor", action="store_true", help="skip the hand-tuned LanceDB table"
    )
    parser.add_argument(
        "--compact-first",
        action="store_true",
        help="compact both tables before the queries (default: query them as written, "
        "one fragment per commit, as an ingest leaves them)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args()
    result = run(args)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
