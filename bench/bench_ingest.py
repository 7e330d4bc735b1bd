"""End-to-end ingest throughput vs the slowest stage alone, and video-hours per hour.

One run, side by side: (1) decode alone on the decode actors, (2) encode alone on the
encode actor (clips decoded beforehand), (3) the ingest pipeline (decode -> encode ->
LanceDB commits), (4) the whole Prefect flow. Ratio = (3) / slowest of (1), (2).
Run: .venv/bin/python bench/bench_ingest.py [--videos 8 --seconds 300 --size 640x360]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from schemas.settings import quiet_third_party

quiet_third_party()  # this script is an entry point: before Prefect and Ray are imported

import ray  # noqa: E402

from actors.pipeline import IngestPipeline  # noqa: E402
from actors.runtime import bind_model, ensure_ray  # noqa: E402
from actors.writer import MemoryWriter  # noqa: E402
from flows.ingest import ingest_flow  # noqa: E402
from schemas.config import ModelConfig, StorageConfig, VMemConfig  # noqa: E402
from storage.archive import list_source  # noqa: E402
from world.samples import write_synthetic_video  # noqa: E402


def decode_alone(pipe: IngestPipeline, tasks) -> tuple[float, list]:
    """Every clip of every video through the decode actors, all streams drained at once."""
    started = time.perf_counter()
    streams = {
        pipe.decoders[i % len(pipe.decoders)].stream.remote(task): i for i, task in enumerate(tasks)
    }
    clips = [[] for _ in tasks]
    while streams:
        ready, _ = ray.wait(list(streams), num_returns=1)
        for stream in ready:
            try:
                clips[streams[stream]].extend(ray.get(next(stream)).clips)
            except StopIteration:
                del streams[stream]
    return time.perf_counter() - started, clips


def encode_alone(pipe: IngestPipeline, clips_per_video: list[list], batch: int) -> float:
    """The decoded clips through the encode actor, ``batch`` videos side by side."""
    encoder = pipe.encoders[0]
    started = time.perf_counter()
    for first in range(0, len(clips_per_video), batch):
        group = [c for c in clips_per_video[first : first + batch] if c]
        refs = []
        for step in range(max(len(c) for c in group)):
            refs.append(encoder.encode_step.remote([c[step] for c in group if step < len(c)]))
        ray.get(refs)
        ray.get(encoder.release.remote([c[0].video_id for c in group]))
    return time.perf_counter() - started


def pipeline_alone(pipe: IngestPipeline, bound, tasks, db: Path) -> float:
    cfg = bound.config.with_overrides(storage={"db": str(db)})
    writer = MemoryWriter(cfg.storage, bound.encoder, bound.dims)
    started = time.perf_counter()
    pipe.run(tasks, writer.add)
    writer.flush()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--size", default="640x360", help="WxH of the generated videos")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    videos = Path(tempfile.gettempdir()) / f"vmem-bench-videos-{args.seconds:.0f}s-{args.size}"
    for i in range(args.videos):  # kept between runs: writing them is the slow part
        if not (videos / f"v{i}.mp4").exists():
            write_synthetic_video(videos / f"v{i}.mp4", args.seconds, size=size, seed=i)
    work = Path(tempfile.mkdtemp(prefix="vmem-bench-"))
    (work / "archive").mkdir()
    for i in range(args.videos):
        (work / "archive" / f"v{i}.mp4").symlink_to(videos / f"v{i}.mp4")
    cfg = VMemConfig(
        storage=StorageConfig(db=str(work / "db-flow")),
        model=ModelConfig(cache_dir=str(work / "models")),
    )
    ensure_ray(cfg.ray)
    bound = bind_model(cfg)
    tasks = list_source(str(work / "archive"))
    pipe = IngestPipeline(bound.config, bound.checkpoint)
    video_s = args.seconds * args.videos

    decode_alone(pipe, tasks[:1])  # warm-up: actor imports, first PyAV open
    runs = []
    for r in range(args.repeats):  # interleaved, so all three see the same machine load
        t_decode, clips = decode_alone(pipe, tasks)
        t_encode = encode_alone(pipe, clips, bound.config.encode.batch_videos)
        t_pipe = pipeline_alone(pipe, bound, tasks, work / f"db-pipe-{r}")
        runs.append((t_decode, t_encode, t_pipe))
    pipe.close()  # the flow starts its own actors
    t_decode, t_encode, t_pipe = (statistics.median(column) for column in zip(*runs, strict=True))
    started = time.perf_counter()
    report = ingest_flow(str(work / "archive"), cfg)
    t_flow = time.perf_counter() - started

    slowest = max(t_decode, t_encode)
    print(
        f"{args.videos} videos x {args.seconds:.0f} s ({args.size}, 30 fps, 2 s GOP); "
        f"{sum(len(c) for c in clips)} clips; cpus={ray.cluster_resources().get('CPU')}"
    )
    print(f"| stage | wall s (median of {args.repeats}) | video-s per s |")
    print("|---|---|---|")
    for name, t in [
        ("decode alone", t_decode),
        ("encode alone", t_encode),
        ("pipeline (decode+encode+commit)", t_pipe),
        ("Prefect flow (all of it)", t_flow),
    ]:
        print(f"| {name} | {t:.2f} | {video_s / t:.1f} |")
    print(f"pipeline throughput / slowest stage alone: {slowest / t_pipe:.2f}")
    print(
        f"video-hours per hour: pipeline {video_s / t_pipe:.0f}, whole flow {video_s / t_flow:.0f} "
        f"(the flow includes starting Prefect's ephemeral API; {report.done} videos done)"
    )


if __name__ == "__main__":
    main()
