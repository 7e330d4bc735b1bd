"""Fixtures for the model tests: tiny models and random uint8 clips."""

from __future__ import annotations

import pytest
import torch

from models.registry import build_default_model
from models.vmem import VMemModel


@pytest.fixture(scope="session")
def model() -> VMemModel:
    """The tiny default model (seed 0), eval mode; tests must not modify it."""
    return build_default_model(seed=0)


@pytest.fixture
def make_clips():
    """make_clips(batch, seed, frames=16, size=64) -> (B, T, size, size, 3) uint8."""

    def make(batch: int, seed: int, frames: int = 16, size: int = 64) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        shape = (batch, frames, size, size, 3)
        return torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)

    return make
