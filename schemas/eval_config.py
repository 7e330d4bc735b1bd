"""The evaluation section of the config tree: what an evaluation run measures; saved in
its report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """What an evaluation run measures; saved in its report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = None  # VMem checkpoint dir; None: the trained default (checkpoints/default)
    workdir: str = "vmem-eval"
    seed: int = 5000  # held-out worlds: seed, seed+1, ... (training uses 1000-2199)
    videos: int = Field(3, ge=1)
    minutes: float = Field(10.0, gt=0)
    per_type: int = Field(4, ge=1)
    k: int = Field(4, ge=1)
    ablations: bool = True
    grid_minutes: list[float] = Field(default_factory=list)  # e.g. [1, 5, 15, 30, 60]
    grid_depths: list[float] = Field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    grid_videos: int = Field(1, ge=1)  # needle videos per grid cell (world seeds seed, seed+1, ...)
    model_cache: str = "~/.cache/vmem/models"
