"""Encoding on the GPU against the CPU: one model, the same clips, both devices in one run.

First the check: every clip's memory and indicator from the GPU path against the CPU
path's (largest absolute difference), with memory carried across clips. Then throughput,
side by side: clips/s on each device for several numbers of videos encoded together.
Run where a GPU is: python bench/bench_encode_devices.py [--model DIR]
(without --model: the default architecture with random weights, which costs the same).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from bench_encode import make_clips, run_batched

from actors.encode import EncodeStage
from checkpoints.registry import resolve_checkpoint


def encode_all(stage: EncodeStage, videos) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """(video, clip) -> (memory, archive key), clip t of every video in one step."""
    out = {}
    for step in zip(*videos, strict=True):
        for record in stage.encode_step(list(step)):
            out[record.video_id, record.clip_index] = (record.memory, record.archive_key)
    stage.release([v[0].video_id for v in videos])
    return out


def largest_difference(a: dict, b: dict) -> tuple[float, float]:
    """Largest |a - b| over memories, then over archive keys."""
    mem = max(float(np.abs(a[key][0] - b[key][0]).max()) for key in a)
    ind = max(float(np.abs(a[key][1] - b[key][1]).max()) for key in a)
    return mem, ind


def clips_per_second(stage: EncodeStage, videos, repeats: int) -> float:
    """Median throughput of ``run_batched`` over ``repeats`` runs (after one warm-up)."""
    run_batched(stage, videos)
    if stage.device == "cuda":
        torch.cuda.synchronize()
    walls = [run_batched(stage, videos) for _ in range(repeats)]
    return len(videos) * len(videos[0]) / float(np.median(walls))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="checkpoint dir (default: tiny model)")
    parser.add_argument("--batches", default="1,16,64", help="videos encoded together")
    parser.add_argument("--clips", type=int, default=8, help="clips per video")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark compares the GPU with the CPU")
    with tempfile.TemporaryDirectory() as cache:
        checkpoint = args.model or str(resolve_checkpoint(None, 0, Path(cache)))
        stages = {name: EncodeStage(checkpoint, device=name) for name in ("cpu", "cuda")}
        for stage in stages.values():
            stage.setup()
        model = stages["cpu"].model
        print(
            f"gpu={torch.cuda.get_device_name()} torch={torch.__version__} "
            f"cpu threads={torch.get_num_threads()} clip: T={model.clip_frames}, "
            f"{model.image_size}px, M={model.memory_tokens}"
        )
        check = make_clips(4, args.clips, model.clip_frames, model.image_size)
        mem, ind = largest_difference(
            encode_all(stages["cpu"], check), encode_all(stages["cuda"], check)
        )
        print(
            f"largest |GPU - CPU|: memory {mem:.2e}, indicator {ind:.2e} "
            f"(4 videos x {args.clips} clips)"
        )
        print("| videos together | CPU clips/s | GPU clips/s | GPU / CPU |")
        print("|---|---|---|---|")
        for n in (int(b) for b in args.batches.split(",")):
            videos = make_clips(n, args.clips, model.clip_frames, model.image_size)
            rate = {
                name: clips_per_second(stage, videos, args.repeats)
                for name, stage in stages.items()
            }
            print(
                f"| {n} | {rate['cpu']:.1f} | {rate['cuda']:.1f} "
                f"| {rate['cuda'] / rate['cpu']:.1f}x |"
            )


if __name__ == "__main__":
    main()
