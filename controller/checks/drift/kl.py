"""Kullback-Leibler divergence of the row-norm distributions.

Same shared reference-decile bins as PSI. The gated value is KL(current ||
reference) -- "how surprising is today's data under yesterday's model" --
and the other direction is reported in the detail, since KL is asymmetric
(their sum is PSI).
"""

from __future__ import annotations

import numpy as np

from .base import BIN_EPSILON, BinnedNormStatistic, _fmt


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for strictly positive proportion vectors (= scipy.stats.entropy(p, q))."""
    return float(np.sum(p * np.log(p / q)))


class KL(BinnedNormStatistic):
    """KL(current || reference) of norms on shared reference-decile bins."""

    name = "kl"
    default_threshold = 0.1
    space_free = True
    description = "KL(current||reference) of row norms on shared reference-decile bins"

    def _score(self, ref_p: np.ndarray, cur_p: np.ndarray, bins: int) -> tuple[float, str]:
        return kl(cur_p, ref_p), (
            "KL(current||reference) of norms {value} {op} max {threshold} "
            f"(KL(reference||current) {_fmt(kl(ref_p, cur_p))}; {bins} bins on reference quantiles, "
            f"empty bins floored at {BIN_EPSILON:g})")
