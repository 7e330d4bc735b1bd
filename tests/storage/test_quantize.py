from __future__ import annotations

import numpy as np
import pytest

from storage.quantize import dequantize_tokens, quantize_tokens


def test_round_trip_error_is_within_half_a_step():
    rng = np.random.default_rng(0)
    memory = rng.normal(size=(6, 32)).astype(np.float32) * rng.uniform(0.01, 50, size=(6, 1))
    flat, scales = quantize_tokens(memory)
    assert flat.dtype == np.int8 and flat.shape == (6 * 32,)
    assert scales.dtype == np.float32 and scales.shape == (6,)
    restored = dequantize_tokens(flat.reshape(6, 32), scales.reshape(6, 1))
    assert restored.shape == (6, 32) and restored.dtype == np.float32
    bound = scales[:, None] / 2 + 1e-6 * np.abs(memory).max(axis=1, keepdims=True)
    assert np.all(np.abs(restored - memory) <= bound)
    # per-token scale: the largest magnitude of each token maps to +-127
    assert np.all(np.abs(flat.reshape(6, 32)).max(axis=1) == 127)


def test_zero_tokens_stay_zero():
    memory = np.zeros((2, 4), np.float32)
    memory[1] = [1, -2, 0, 0.5]
    flat, scales = quantize_tokens(memory)
    assert scales[0] == 0 and np.all(flat[:4] == 0)
    np.testing.assert_allclose(
        dequantize_tokens(flat.reshape(2, 4), scales.reshape(2, 1))[1], memory[1], atol=2 / 254
    )


def test_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(M, D\)"):
        quantize_tokens(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        quantize_tokens(np.array([[np.nan, 1.0]], np.float32))
