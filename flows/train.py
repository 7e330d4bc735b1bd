"""The training flow (``vmem train``): the recipe of ``training/`` as one Prefect flow.

Stage 1 (``vision_steps``): the vision backbone learns per-frame labels, then is frozen and
every training frame's tokens are computed once. Stage 1a (``motion_steps``): the frame-motion
module learns each frame's motion from its tokens' change, then is frozen. Stage 1b
(``stack_steps``): the streaming encoder learns the scene stack alone. Stage 2: the joint
AdamW loop (answer CE, question<->indicator InfoNCE, training-only heads). Then held-out
metrics, and the checkpoint folder is saved (docs/training.md).
"""

from __future__ import annotations

import json
import time

import torch
from prefect import flow

from schemas.train_config import TrainConfig
from training.data import (
    build_examples,
)
from training.heldout import evaluate
from training.loop import (
    build_models,
    cache_questions,
    cache_tokens,
    save_run,
    train_loop,
    vision_stage,
)
from training.motion import motion_accuracy, pretrain_motion
from training.stack import pretrain_stack


@flow(name="vmem-train", log_prints=True)
def train_flow(cfg: TrainConfig) -> str:
    """Train on procedural worlds and write an HF checkpoint folder; returns its path."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, answerer = build_models(cfg)  # default (or base) VMem model + fresh answerer
    started = time.perf_counter()
    frame_metrics = vision_stage(cfg, model) if cfg.vision_steps > 0 else {}
    print(f"stage 1 (vision): {json.dumps(frame_metrics)}")
    size, clip = model.image_size, model.clip_frames
    train = build_examples(cfg.train_seeds, tuple(cfg.durations), clip, size, cfg.per_type)
    held_out = build_examples(cfg.eval_seeds, tuple(cfg.durations), clip, size, cfg.per_type)
    if cfg.vision_steps > 0:
        cache_tokens(model, train + held_out)
    cache_questions(model, train)
    print(f"{len(train)} training worlds, {sum(len(e.questions) for e in train)} questions")
    motion = model.streaming.motion
    if cfg.motion_steps > 0 and motion is not None and cfg.vision_steps > 0:
        _, probe = pretrain_motion(
            motion, train, steps=cfg.motion_steps, seed=cfg.seed,
            log_every=max(1, cfg.log_every * 5),
        )  # fmt: skip
        frame_metrics["frame_motion"] = motion_accuracy(motion, probe, held_out)
        print(f"stage 1a (frame motion): {frame_metrics['frame_motion']:.3f} held out")
    if cfg.stack_steps > 0:
        stack_log = pretrain_stack(
            model, train, steps=cfg.stack_steps, depth=cfg.stack_depth or 4,
            videos_per_step=cfg.videos_per_step, carried_weight=cfg.carried_weight,
            grad_clip=cfg.grad_clip, seed=cfg.seed, log_every=max(1, cfg.log_every * 5),
        )  # fmt: skip
        print(f"stage 1b (scene stack): {stack_log[-1]}")
    history = train_loop(cfg, model, answerer, train)  # AdamW, CPU
    metrics = evaluate(model, answerer, held_out, cfg.k)  # recall@K vs random, accuracy
    metrics.update(frame_metrics, train_seconds=round(time.perf_counter() - started, 1))
    print(f"held-out metrics: {json.dumps(metrics)}")
    return str(save_run(cfg, model.eval(), answerer.eval(), history, metrics, train))
