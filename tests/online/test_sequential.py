"""Confidence sequences keep their level when looked at after every sample; a fixed interval does not."""

from __future__ import annotations

import math
import random
from statistics import NormalDist

import pytest

from controller.core import sequential as S

ALPHA = 0.05


def _stream_misses(draw, truth: float, n: int, look_every: int, horizon: float, runs: int, seed: int,
                   fixed: bool = False) -> float:
    """Share of runs whose interval (CS or fixed-n normal interval) excluded `truth` at some look."""
    rng = random.Random(seed)
    z = NormalDist().inv_cdf(1 - ALPHA / 2)
    rho = S.rho_for(horizon, ALPHA)
    misses = 0
    for _ in range(runs):
        total = total_sq = 0.0
        for i in range(1, n + 1):
            x = draw(rng)
            total += x
            total_sq += x * x
            if i % look_every or i < 2:
                continue
            mean = total / i
            var = max(total_sq / i - mean * mean, 0.0) * i / (i - 1)
            half = z * math.sqrt(var / i) if fixed else S.normal_mixture_radius(var, i, ALPHA, rho)
            if abs(mean - truth) > half:
                misses += 1
                break
    return misses / runs


@pytest.mark.parametrize("name,draw,truth", [
    ("exponential latency", lambda r: r.expovariate(1 / 40.0), 40.0),
    ("ctr", lambda r: float(r.random() < 0.4), 0.4),
])
def test_normal_mixture_cs_keeps_alpha_over_many_looks_and_the_fixed_interval_does_not(name, draw, truth):
    cs = _stream_misses(draw, truth, n=2000, look_every=20, horizon=500, runs=400, seed=1)
    fixed = _stream_misses(draw, truth, n=2000, look_every=20, horizon=500, runs=400, seed=1, fixed=True)
    assert cs <= ALPHA, (name, cs)
    assert fixed > 2 * ALPHA, (name, fixed)  # 100 looks at a 95% interval: far more than 5% misses


def test_mean_cs_agrees_with_the_radius_and_shrinks():
    xs = [float(i % 3) for i in range(300)]
    iv = S.mean_cs(xs, ALPHA)
    mean = sum(xs) / len(xs)
    var = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    assert iv.estimate == pytest.approx(mean)
    assert iv.hi - mean == pytest.approx(S.normal_mixture_radius(var, 300, ALPHA, S.rho_for(S.DEFAULT_HORIZON, ALPHA)))
    assert (S.mean_cs(xs * 4, ALPHA).hi - mean) < (iv.hi - mean)


def test_all_zero_ctr_is_not_read_as_certainty():
    iv = S.mean_cs([0.0] * 20, ALPHA)
    assert iv.hi > 0.05  # twenty impressions without a click do not prove a CTR of 0


def test_difference_cs_covers_an_aa_split_and_separates_a_real_gap():
    rng = random.Random(5)
    a = [float(rng.random() < 0.5) for _ in range(3000)]
    b = [float(rng.random() < 0.5) for _ in range(3000)]
    c = [float(rng.random() < 0.4) for _ in range(3000)]
    same = S.difference_cs(a, b, ALPHA)
    assert same.lo < 0 < same.hi
    worse = S.difference_cs(a, c, ALPHA)
    assert worse.hi < 0 and worse.lo < -0.1 < worse.hi


def test_quantile_cs_brackets_the_true_quantile_and_is_unbounded_when_data_are_few():
    rng = random.Random(2)
    xs = [rng.expovariate(1.0) for _ in range(3000)]
    iv = S.quantile_cs(xs, 0.95, ALPHA)
    assert iv.lo < -math.log(0.05) < iv.hi
    few = S.quantile_cs(xs[:20], 0.99, ALPHA)
    assert few.hi == math.inf and few.as_list()[1] is None


def test_quantile_cs_coverage_over_looks():
    rng = random.Random(3)
    truth = -math.log(0.5) * 10  # median of an exponential with mean 10
    misses = 0
    for _ in range(200):
        xs: list[float] = []
        for look in range(1, 21):
            xs += [rng.expovariate(0.1) for _ in range(50)]
            iv = S.quantile_cs(xs, 0.5, ALPHA)
            if not iv.lo <= truth <= iv.hi:
                misses += 1
                break
    assert misses / 200 <= ALPHA
