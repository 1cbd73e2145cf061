"""l2_normalize is np.linalg.norm's normalisation bit for bit: stored vectors, drift and golden values
depend on it, and the search path calls it once per query (so it skips np.linalg.norm's dispatch)."""

from __future__ import annotations

import numpy as np
import pytest

from controller.embed.base import l2_normalize


def reference(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (x / norms).astype(np.float32, copy=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("shape", [(1, 384), (257, 384), (5, 3)])
def test_l2_normalize_equals_the_linalg_norm_form(dtype, shape):
    x = (np.random.default_rng(1).standard_normal(shape) * 7).astype(dtype)
    x[0] = 0  # a zero row stays zero
    got = l2_normalize(x)
    assert got.dtype == np.float32 and np.array_equal(got, reference(x))
    assert not got[0].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_row_path_equals_the_batch_path_for_every_row(dtype):
    """The one-row (query) branch sums a scalar instead of a (1, 1) column: same bits, row by row,
    also for rows near the float32 limits and the real SciFact-like 384-d scale."""
    rng = np.random.default_rng(7)
    rows = (rng.standard_normal((500, 384)) * rng.choice([1e-18, 1e-3, 1.0, 7.0, 1e17], size=(500, 1))).astype(dtype)
    batch = reference(rows)
    for i in range(rows.shape[0]):
        assert np.array_equal(l2_normalize(rows[i:i + 1]), batch[i:i + 1]), f"row {i} differs"
    assert not l2_normalize(np.zeros((1, 384), dtype=dtype)).any()
