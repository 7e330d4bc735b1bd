"""Decode benchmark: sparse 1 fps sampling vs decoding (and converting) every frame.

Writes a 30 fps H.264 video with 2 s GOPs (640x360, libx264 veryfast) to a temp dir, then
times, side by side in one run (median of --repeats):

  (a) naive: decode every frame, convert every frame to a full-size RGB ndarray, keep 1 fps
  (b) decode every frame, convert only the sampled ones (small RGB)
  (c) decode.sampling.sample_frames, mode "exact"
  (d) decode.sampling.sample_frames, modes "auto" and "keyframe"

Run: .venv/bin/python bench/bench_decode.py [--seconds 150] [--repeats 5] [--bframes N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av

from decode.sampling import SampleStats, sample_frames
from world.samples import write_synthetic_video

FRAME_SIZE = 64
EPS = 1e-3


def naive_all_rgb(path: Path, sample_fps: float) -> tuple[int, int]:
    """(a) Every frame decoded and converted at full size; the 1 fps ones are kept."""
    kept, decoded, next_t = [], 0, 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            decoded += 1
            rgb = frame.to_ndarray(format="rgb24")  # (H, W, 3) full size
            if frame.time >= next_t - EPS:
                kept.append(rgb)
                next_t += 1 / sample_fps
    return len(kept), decoded


def decode_all_convert_sampled(path: Path, sample_fps: float) -> tuple[int, int]:
    """(b) Every frame decoded; only the sampled ones converted, at the small size."""
    kept, decoded, next_t = [], 0, 0.0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            decoded += 1
            if frame.time >= next_t - EPS:
                kept.append(frame.to_ndarray(width=FRAME_SIZE, height=FRAME_SIZE, format="rgb24"))
                next_t += 1 / sample_fps
    return len(kept), decoded


def sampler(mode: str) -> Callable[[Path, float], tuple[int, int]]:
    """(c), (d) Our sampler in ``mode``."""

    def run(path: Path, sample_fps: float) -> tuple[int, int]:
        stats = SampleStats()
        n = sum(1 for _ in sample_frames(path, sample_fps, FRAME_SIZE, mode, stats))
        return n, stats.frames_decoded

    return run


VARIANTS = {
    "(a) naive: decode all, RGB all (full size)": naive_all_rgb,
    "(b) decode all, RGB sampled only (64x64)": decode_all_convert_sampled,
    "(c) sampler exact": sampler("exact"),
    "(d) sampler auto": sampler("auto"),
    "(d) sampler keyframe": sampler("keyframe"),
}


def measure(path: Path, sample_fps: float, repeats: int) -> dict[str, tuple[float, int, int]]:
    """name -> (median wall s, samples, frames decoded); variants interleaved per repeat."""
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    counts: dict[str, tuple[int, int]] = {}
    for _ in range(repeats):
        for name, fn in VARIANTS.items():
            start = time.perf_counter()
            counts[name] = fn(path, sample_fps)
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(times[name]), *counts[name]) for name in VARIANTS}


def table(results: dict[str, tuple[float, int, int]], seconds: float) -> str:
    base = results[next(iter(results))][0]
    lines = [
        "| variant | wall s (median) | frames decoded | sampled frames/s "
        "| video s per s | speed-up vs (a) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, (wall, samples, decoded) in results.items():
        lines.append(
            f"| {name} | {wall:.3f} | {decoded} | {samples / wall:,.0f} "
            f"| {seconds / wall:,.0f} | {base / wall:.1f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=150.0, help="video length")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sample-fps", type=float, default=1.0)
    parser.add_argument("--bframes", type=int, default=None, help="force N B-frames")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_synthetic_video(
            Path(tmp) / "bench.mp4",
            args.seconds,
            fps=30,
            size=(640, 360),
            gop_seconds=2.0,
            preset="veryfast",
            bframes=args.bframes,
        )
        written = time.perf_counter() - start
        print(
            f"video: {args.seconds:.0f} s, 640x360, 30 fps, 2 s GOP, libx264 veryfast"
            f"{f', bframes={args.bframes}' if args.bframes else ''}, "
            f"{path.stat().st_size / 1e6:.1f} MB (written in {written:.0f} s); "
            f"sampling {args.sample_fps:g} fps to {FRAME_SIZE}x{FRAME_SIZE}, "
            f"median of {args.repeats}"
        )
        print(table(measure(path, args.sample_fps, args.repeats), args.seconds))


if __name__ == "__main__":
    main()
