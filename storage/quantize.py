"""Memory tokens stored as int8 with one float32 scale per token (symmetric, per token).

A quarter of float32's bytes, and readable by DuckDB (which fails on float16 columns).
The round-trip error of an element is at most half its token's scale (max|x| / 254).
"""

from __future__ import annotations

import numpy as np

QMAX = 127


def quantize_tokens(memory: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, D) float -> (int8 flat (M*D,), scales (M,) float32), row-major."""
    memory = np.asarray(memory, dtype=np.float32)
    if memory.ndim != 2:
        raise ValueError(f"memory must be (M, D), got shape {memory.shape}")
    if not np.isfinite(memory).all():
        raise ValueError("memory contains NaN or inf")
    scales = np.abs(memory).max(axis=1) / QMAX  # (M,)
    safe = np.where(scales > 0, scales, 1.0)[:, None]  # (M, 1); all-zero tokens stay zero
    q = np.clip(np.rint(memory / safe), -QMAX, QMAX).astype(np.int8)  # (M, D)
    return q.reshape(-1), scales.astype(np.float32)


def dequantize_tokens(tokens: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """int8 tokens (..., M, D) + their scales (..., M, 1) -> (..., M, D) float32."""
    return np.asarray(tokens, dtype=np.int8).astype(np.float32) * np.asarray(
        scales, dtype=np.float32
    )
