"""Paired bootstrap and regression listing used by the golden quality gate."""

from __future__ import annotations

import numpy as np
import pytest

from controller.checks.stats import PairedComparison, most_regressed, paired_bootstrap
from controller.errors import CheckError, InvalidInput


def _pair(n: int, shift: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    old = rng.random(n)
    return old, old + shift + rng.normal(0, 0.2, n)


def test_same_seed_same_interval_other_seed_differs():
    old, new = _pair(300, 0.01)
    a = paired_bootstrap(old, new, seed=7)
    assert a == paired_bootstrap(old, new, seed=7)
    b = paired_bootstrap(old, new, seed=8)
    assert (a.ci_low, a.ci_high) != (b.ci_low, b.ci_high)
    assert isinstance(a, PairedComparison) and a.seed == 7 and a.n == 300 and a.n_boot == 2000


def test_interval_contains_true_delta_on_large_sample():
    old, new = _pair(20_000, -0.03)
    cmp = paired_bootstrap(old, new, confidence=0.99, n_boot=1000)
    assert cmp.ci_low < -0.03 < cmp.ci_high
    assert cmp.ci_low <= cmp.mean_delta <= cmp.ci_high
    assert cmp.ci_high < 0                       # a real regression is detected
    assert cmp.mean_delta == pytest.approx(cmp.mean_new - cmp.mean_old)


def test_interval_width_matches_normal_theory():
    old, new = _pair(5000, 0.0, seed=3)
    cmp = paired_bootstrap(old, new, confidence=0.95, n_boot=4000)
    se = np.std(new - old, ddof=1) / np.sqrt(5000)
    assert (cmp.ci_high - cmp.ci_low) == pytest.approx(2 * 1.96 * se, rel=0.1)


def test_identical_arrays_give_zero_interval():
    old = np.random.default_rng(0).random(100)
    cmp = paired_bootstrap(old, old.copy())
    assert (cmp.mean_delta, cmp.ci_low, cmp.ci_high) == (0.0, 0.0, 0.0)


def test_chunking_covers_all_draws():
    old, new = _pair(50_000, 0.01)   # > 1 chunk of draws at this n
    cmp = paired_bootstrap(old, new, n_boot=300, seed=2)
    assert cmp.ci_low < cmp.mean_delta < cmp.ci_high


@pytest.mark.parametrize("old,new", [(np.ones(3), np.ones(4)), (np.array([]), np.array([])),
                                     (np.array([np.nan]), np.array([1.0]))])
def test_impossible_comparisons(old, new):
    with pytest.raises(CheckError):
        paired_bootstrap(old, new)


@pytest.mark.parametrize("kwargs", [{"confidence": 1.0}, {"confidence": 0}, {"n_boot": 0},
                                    {"n_boot": 2.5}])
def test_bad_parameters(kwargs):
    with pytest.raises(InvalidInput):
        paired_bootstrap(np.ones(3), np.ones(3), **kwargs)


def test_most_regressed_orders_by_drop_and_skips_improvements():
    ids = ["a", "b", "c", "d", "e", "f"]
    old = np.array([1.0, 0.5, 1.0, 0.25, 0.75, 0.5])
    new = np.array([0.5, 0.75, 0.0, 0.25, 0.5, 0.0])
    got = most_regressed(ids, old, new, n=5)
    assert got == [("c", 1.0, 0.0), ("a", 1.0, 0.5), ("f", 0.5, 0.0), ("e", 0.75, 0.5)]
    assert most_regressed(ids, old, new, n=1) == [("c", 1.0, 0.0)]
    assert most_regressed(ids, old, old) == []


def test_most_regressed_misaligned_ids():
    with pytest.raises(CheckError):
        most_regressed(["a"], np.ones(2), np.ones(2))
