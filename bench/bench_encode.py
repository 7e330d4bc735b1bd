"""Encode throughput: clip t of 16 videos in one forward pass vs one video at a time.

Both runs use the same EncodeStage, model and clips, side by side in one process, so the
ratio is robust to a noisy machine. Run: .venv/bin/python bench/bench_encode.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from actors.encode import EncodeStage
from checkpoints.registry import resolve_checkpoint
from schemas.records import Clip


def make_clips(n_videos: int, n_clips: int, t: int, size: int) -> list[list[Clip]]:
    rng = np.random.default_rng(0)
    return [
        [
            Clip(
                f"v{v}",
                i,
                16.0 * i,
                16.0 * (i + 1),
                rng.integers(0, 255, (t, size, size, 3), np.uint8),
                t,
            )
            for i in range(n_clips)
        ]
        for v in range(n_videos)
    ]


def run_batched(stage: EncodeStage, videos: list[list[Clip]]) -> float:
    started = time.perf_counter()
    for step in zip(*videos, strict=True):
        stage.encode_step(list(step))
    stage.release([v[0].video_id for v in videos])
    return time.perf_counter() - started


def run_one_at_a_time(stage: EncodeStage, videos: list[list[Clip]]) -> float:
    started = time.perf_counter()
    for clips in videos:
        for clip in clips:
            stage.encode_step([clip])
        stage.release([clips[0].video_id])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default=None, help="checkpoint dir (default: tiny model)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        checkpoint = args.model or str(resolve_checkpoint(None, 0, Path(cache)))
        stage = EncodeStage(checkpoint, device="cuda" if torch.cuda.is_available() else "cpu")
        stage.setup()
        videos = make_clips(
            args.videos, args.clips, stage.model.clip_frames, stage.model.image_size
        )
        run_batched(stage, videos[:2])  # warm-up
        batched, single = [], []
        for _ in range(args.repeats):
            batched.append(run_batched(stage, videos))
            single.append(run_one_at_a_time(stage, videos))
    total = args.videos * args.clips
    b, s = float(np.median(batched)), float(np.median(single))
    print(
        f"device={stage.device} threads={torch.get_num_threads()} clips={total} "
        f"(T={stage.model.clip_frames}, {stage.model.image_size}px)"
    )
    print(f"| mode | wall s (median of {args.repeats}) | clips/s |")
    print("|---|---|---|")
    print(f"| {args.videos} videos batched | {b:.3f} | {total / b:.1f} |")
    print(f"| one video at a time | {s:.3f} | {total / s:.1f} |")
    print(f"ratio batched / one-at-a-time: {s / b:.2f}x")


if __name__ == "__main__":
    main()
