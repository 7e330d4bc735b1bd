"""The evaluation section of the config tree: what an evaluation run measures; saved in
its report."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvalConfig(BaseModel):
    """What an evaluation run measures; saved in its report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(
        None, description="VMem checkpoint dir; None: the trained default (checkpoints/default)"
    )
    workdir: str = Field("vmem-eval", description="videos, databases and grid files")
    seed: int = Field(
        5000, description="held-out worlds: seed, seed+1, ... (training uses 1000-2199)"
    )
    videos: int = Field(3, ge=1, description="held-out world videos")
    minutes: float = Field(10.0, gt=0, description="length of each world video")
    per_type: int = Field(4, ge=1, description="questions per type per world")
    k: int = Field(4, ge=1, description="K: clips selected per video")
    ablations: bool = Field(
        True, description="also (a) memory propagation off and (b) the last K clips"
    )
    grid_minutes: list[float] = Field(
        default_factory=list,
        description="needle grid video lengths in minutes (e.g. [1, 5, 15, 30, 60]); "
        "empty: no grid",
    )
    grid_depths: list[float] = Field(
        default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0],
        description="needle grid: where the needle sits, as a share of the video",
    )
    grid_videos: int = Field(
        1, ge=1, description="needle videos per grid cell (world seeds seed, seed+1, ...)"
    )
    model_cache: str = Field(
        "~/.cache/vmem/models", description="where the default model is materialised once"
    )
