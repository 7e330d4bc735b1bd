"""The joint training stage and what it needs: the models, batches, training-only heads,
the AdamW loop, cached frame tokens and question embeddings, and the saved run."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from checkpoints.compose import compose_model
from checkpoints.registry import build_default_model
from models.answer import ANSWERER_DIR, DEFAULT_ANSWER_LM, AnswererConfig, MemoryAnswerer
from models.select import SELECTION_PARTS, part_texts
from models.vmem import VMemModel
from schemas.train_config import TrainConfig
from training.data import (
    LABEL_GROUPS,
    N_CLIP_LABELS,
    STACK_LABELS,
    VideoExample,
    group_by_clips,
    sample_batch,
)
from training.heads import ClipLabelHead, EvidencePlaceHead, SceneStackHead
from training.losses import training_losses
from training.vision import frame_accuracy, frame_dataset, freeze, pretrain_vision
from world.questions import answer_vocabulary


def build_models(cfg: TrainConfig) -> tuple[VMemModel, MemoryAnswerer]:
    """The VMem model (``base``, or the default with ``question_model``) and a fresh answerer."""
    if cfg.base is not None:
        model = VMemModel.from_pretrained(cfg.base)
    elif cfg.question_model is not None:
        model = compose_model(
            None,
            None,
            cfg.question_model,
            seed=cfg.model_seed,
            per_token_indicators=cfg.per_token_indicators,
            motion_features=cfg.motion_features,
        )
    else:
        model = build_default_model(cfg.model_seed, cfg.per_token_indicators, cfg.motion_features)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.model_seed)
        answerer = MemoryAnswerer(
            AnswererConfig(
                memory_dim=model.hidden_size,
                k=cfg.k,
                memory_tokens=model.memory_tokens,
                question_dim=model.question_encoder.proj.in_features,
                vocab=answer_vocabulary(),
                question_first=cfg.question_first,
                lm_config={
                    **DEFAULT_ANSWER_LM,
                    "hidden_size": cfg.answerer_width,
                    "intermediate_size": 2 * cfg.answerer_width,
                    "num_hidden_layers": cfg.answerer_layers,
                    "num_attention_heads": max(1, cfg.answerer_width // 32),
                    "num_key_value_heads": max(1, cfg.answerer_width // 32),
                },
            )
        )
    return model.train(), answerer.train()


def batch_tensors(
    batch: list[VideoExample], answerer: MemoryAnswerer, align_each_clip: Iterable[str] = ()
) -> dict:
    """Stack a batch of same-length videos (their cached tokens, else frames) and flatten
    their questions; questions of the types in ``align_each_clip`` align every evidence
    clip (``training.losses.alignment_loss``)."""
    each_clip = set(align_each_clip)
    video_of = [i for i, ex in enumerate(batch) for _ in ex.questions]
    cached = batch[0].tokens is not None
    return {
        "frames": None if cached else torch.from_numpy(np.stack([ex.frames for ex in batch])),
        "tokens": torch.from_numpy(np.stack([ex.tokens for ex in batch])) if cached else None,
        "pooled": (
            torch.from_numpy(np.concatenate([ex.pooled for ex in batch]))
            if batch[0].pooled is not None
            else None
        ),
        "part_pooled": (
            torch.from_numpy(np.concatenate([ex.part_pooled for ex in batch]))
            if batch[0].part_pooled is not None
            else None
        ),
        "questions": [q for ex in batch for q in ex.questions],
        "video_of": torch.tensor(video_of, dtype=torch.long),
        "positives": torch.from_numpy(np.concatenate([ex.positives for ex in batch])),
        "answer_ids": answerer.encode_answers([a for ex in batch for a in ex.answers]),
        "clip_labels": torch.from_numpy(np.stack([ex.labels for ex in batch])),
        "scene_stack": torch.from_numpy(np.stack([ex.stack for ex in batch])),
        "stack_evidence": torch.from_numpy(np.concatenate([ex.stack_evidence for ex in batch])),
        "slot_answers": torch.tensor([t == "localisation" for ex in batch for t in ex.qtypes]),
        "align_each_clip": torch.tensor([t in each_clip for ex in batch for t in ex.qtypes]),
    }


def training_heads(cfg: TrainConfig, model: VMemModel, answerer: MemoryAnswerer) -> dict:
    """The joint stage's training-only heads, as ``training_losses`` keywords (None: off)."""
    aux_head = None
    if cfg.aux_weight > 0:
        aux_head = ClipLabelHead(model.hidden_size, N_CLIP_LABELS, groups=LABEL_GROUPS)
    stack_head = None
    if cfg.aux_weight > 0 and cfg.stack_depth > 0:  # the head rejects a stack deeper than M
        stack_head = SceneStackHead(model.hidden_size, len(STACK_LABELS), cfg.stack_depth)
    place_head = None
    if cfg.place_weight > 0 and cfg.stack_depth > 0:
        place_head = EvidencePlaceHead(
            answerer.config.lm().hidden_size, model.memory_tokens, cfg.stack_depth
        )
    return {"aux_head": aux_head, "stack_head": stack_head, "place_head": place_head}


def train_loop(
    cfg: TrainConfig, model: VMemModel, answerer: MemoryAnswerer, examples: list[VideoExample]
) -> list[dict]:
    """AdamW steps; returns one log row per step (loss, answer CE, alignment, seconds)."""
    heads = training_heads(cfg, model, answerer)
    extra = [p for head in heads.values() if head is not None for p in head.parameters()]
    params = [p for p in [*model.parameters(), *answerer.parameters(), *extra] if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))
    )
    groups, rng, history = group_by_clips(examples), np.random.default_rng(cfg.seed), []
    start = time.perf_counter()
    for step in range(cfg.steps):
        videos = sample_batch(groups, cfg.videos_per_step, rng)
        batch = batch_tensors(videos, answerer, cfg.align_each_clip)
        oracle = torch.from_numpy(rng.uniform(size=len(batch["questions"])) < cfg.oracle_prob)
        hidden = None
        if cfg.history_drill > 0:  # (drawn only when on: the default's batches stay as they were)
            drill = torch.from_numpy(rng.uniform(size=len(batch["questions"])) < cfg.history_drill)
            earlier = torch.from_numpy(np.concatenate([ex.earlier_only for ex in videos]))
            hidden = earlier & drill.view(-1, 1)
        losses = training_losses(
            model, answerer, **batch, k=cfg.k, temperature=cfg.temperature,
            tau=cfg.gumbel_tau, detach_every=cfg.detach_every, oracle=oracle,
            aux_weight=cfg.aux_weight, place_weight=cfg.place_weight,
            shared_selection=cfg.shared_selection, hidden=hidden, **heads,
        )  # fmt: skip
        optim.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        optim.step()
        sched.step()
        row = {k: round(v.item(), 5) for k, v in losses.items()}
        history.append({"step": step, **row, "seconds": round(time.perf_counter() - start, 2)})
        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            print(json.dumps(history[-1]), flush=True)
    return history


def save_run(cfg, model, answerer, history, metrics, examples) -> Path:
    """The checkpoint folder: VMem model, answerer subfolder, config, seeds, logs."""
    out = Path(cfg.out_dir)
    model.save_pretrained(out)
    answerer.save_pretrained(out / ANSWERER_DIR)
    (out / "train_config.json").write_text(cfg.model_dump_json(indent=1))
    seeds = {
        "train": [ex.seed for ex in examples],
        "eval": list(cfg.eval_seeds),
        "durations": list(cfg.durations),
    }
    (out / "data_seeds.json").write_text(json.dumps(seeds))
    (out / "train_log.json").write_text(json.dumps(history))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return out


def vision_stage(cfg: TrainConfig, model: VMemModel) -> dict:
    """Stage 1: frame labels train the backbone, which is then frozen; held-out accuracy."""
    size, duration = model.image_size, max(cfg.durations)
    frames, labels = frame_dataset(cfg.train_seeds, duration, size, cfg.vision_frames)
    held = frame_dataset(cfg.eval_seeds, duration, size, cfg.vision_frames)
    _, probe = pretrain_vision(
        model.vision, frames, labels, steps=cfg.vision_steps, lr=cfg.vision_lr,
        seed=cfg.seed, log_every=max(1, cfg.log_every * 5),
    )  # fmt: skip
    freeze(model.vision)
    return frame_accuracy(model.vision, probe, *held)


@torch.no_grad()
def cache_questions(model: VMemModel, examples: list[VideoExample], batch: int = 128) -> None:
    """Pooled question embeddings of a frozen pretrained text model, computed once per
    distinct text (templated questions repeat), in batches of similar length."""
    if any(p.requires_grad for p in model.question_encoder.model.parameters()):
        return  # the byte-level encoder trains: nothing to cache
    parts = [part_texts(ex.questions, SELECTION_PARTS) for ex in examples]  # per example
    texts = {q for ex in examples for q in ex.questions}
    texts = sorted(texts | {t for rows in parts for row in rows for t in row}, key=len)
    pooled = {}
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        pooled.update(zip(chunk, model.question_encoder.embed(chunk).numpy(), strict=True))
    for ex, rows in zip(examples, parts, strict=True):
        ex.pooled = np.stack([pooled[q] for q in ex.questions])
        ex.part_pooled = np.stack([[pooled[t] for t in row] for row in rows])


@torch.no_grad()
def cache_tokens(model: VMemModel, examples: list[VideoExample]) -> None:
    """Each example's frame tokens from the frozen backbone, computed once; frames dropped."""
    for ex in examples:
        n_clips, t = ex.frames.shape[:2]
        tokens = model.vision(torch.from_numpy(ex.frames).flatten(0, 1))  # (N*T, P, D)
        ex.tokens = tokens.reshape(n_clips, -1, tokens.shape[-1]).numpy()  # (N, T*P, D)
        ex.frames = None
