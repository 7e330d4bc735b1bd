"""Joint-stage training step of the default recipe, variants side by side on this CPU.

    .venv/bin/python bench/bench_train_step.py [--worlds 30] [--steps 25] [--rounds 2]

Builds the default models (random init, vision frozen, frame tokens and questions cached
as in ``vmem train``), then times ``--steps`` joint steps per variant, in alternating
rounds so that machine noise hits every variant alike, and prints the median seconds per
step and each variant's ratio to fp32 with SDPA attention (the default):

- ``fp32``: the default;
- ``bf16-autocast``: forward under ``torch.autocast("cpu", dtype=torch.bfloat16)``;
- ``eager-attention``: the streaming encoder's and the answerer's LMs with eager attention;
- ``whole-question-selection``: every question's K clips ranked by the whole question
  (``TrainConfig.shared_selection`` off; on by default, it ranks by each alternative an
  ordering question offers).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from schemas.train_config import TrainConfig
from training.data import build_examples, group_by_clips, sample_batch
from training.loop import batch_tensors, build_models, cache_questions, cache_tokens, training_heads
from training.losses import training_losses
from training.vision import freeze


class StepBench:
    """The default recipe's joint step over a small cached training set."""

    def __init__(self, worlds: int):
        self.cfg = cfg = TrainConfig(out_dir="/tmp/vmem-bench-step", vision_steps=0)
        self.model, self.answerer = build_models(cfg)
        seeds = cfg.train_seeds[:worlds]
        size, clip = self.model.image_size, self.model.clip_frames
        examples = build_examples(seeds, tuple(cfg.durations), clip, size, cfg.per_type)
        freeze(self.model.vision)
        cache_tokens(self.model, examples)
        cache_questions(self.model, examples)
        self.heads = training_heads(cfg, self.model, self.answerer)
        modules = [self.model, self.answerer, *(h for h in self.heads.values() if h is not None)]
        self.params = [p for m in modules for p in m.parameters() if p.requires_grad]
        self.optim = torch.optim.AdamW(self.params, lr=cfg.lr)
        self.groups = group_by_clips(examples)

    def set_attention(self, name: str) -> None:
        for lm in (self.model.streaming.lm, self.answerer.lm):
            lm.set_attn_implementation(name)

    def seconds_per_step(self, steps: int, bf16: bool, shared: bool, seed: int) -> float:
        """Median wall seconds of ``steps`` steps (the first 3 dropped as warm-up)."""
        cfg, rng, times = self.cfg, np.random.default_rng(seed), []
        for _ in range(steps + 3):
            start = time.perf_counter()
            batch = sample_batch(self.groups, cfg.videos_per_step, rng)
            batch = batch_tensors(batch, self.answerer, cfg.align_each_clip)
            oracle = torch.from_numpy(rng.uniform(size=len(batch["questions"])) < cfg.oracle_prob)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                losses = training_losses(
                    self.model, self.answerer, **batch, k=cfg.k, oracle=oracle,
                    temperature=cfg.temperature, aux_weight=cfg.aux_weight,
                    place_weight=cfg.place_weight, shared_selection=shared, **self.heads,
                )  # fmt: skip
            self.optim.zero_grad(set_to_none=True)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.optim.step()
            times.append(time.perf_counter() - start)
        return float(np.median(times[3:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", type=int, default=30)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench = StepBench(args.worlds)
    variants = {
        "fp32": ("sdpa", False, True),
        "bf16-autocast": ("sdpa", True, True),
        "eager-attention": ("eager", False, True),
        "whole-question-selection": ("sdpa", False, False),
    }
    timings: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, (attention, bf16, shared) in variants.items():
            bench.set_attention(attention)
            timings[name].append(bench.seconds_per_step(args.steps, bf16, shared, seed=round_))
    base = np.median(timings["fp32"])
    print(f"joint step, default recipe, {args.threads} threads, median of {args.rounds} rounds")
    for name, values in timings.items():
        median = np.median(values)
        print(f"{name:>24}: {median:.3f} s/step  speed vs fp32 {base / median:.2f}x")


if __name__ == "__main__":
    main()
