"""Kullback-Leibler divergence of the row-norm distributions.

Same shared reference-decile bins as PSI. The gated value is KL(current ||
reference) -- "how surprising is today's data under yesterday's model" --
and the other direction is reported in the detail, since KL is asymmetric
(their sum is PSI).
"""

from __future__ import annotations

import numpy as np

from .base import BIN_EPSILON, DriftResult, NormCache, Statistic, _fmt, cohens_d, norms_degenerate, shared_binned


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) in nats for strictly positive proportion vectors (= scipy.stats.entropy(p, q))."""
    return float(np.sum(p * np.log(p / q)))


class KL(Statistic):
    """KL(current || reference) of norms on shared reference-decile bins."""

    name = "kl"
    default_threshold = 0.1
    space_free = True
    description = "KL(current||reference) of row norms on shared reference-decile bins"

    def _compute(self, ref: np.ndarray, cur: np.ndarray, threshold: float, seed: int,
                 cache: NormCache) -> DriftResult:
        rn, cn = cache.norms(ref), cache.norms(cur)
        if norms_degenerate(rn, cn):
            return self.constant_norms(threshold, rn)
        rp, cp, bins = shared_binned(rn, cn)
        forward, backward = kl(cp, rp), kl(rp, cp)
        return self.result(
            forward, threshold,
            "KL(current||reference) of norms {value} {op} max {threshold} "
            f"(KL(reference||current) {_fmt(backward)}; {bins} bins on reference quantiles, "
            f"empty bins floored at {BIN_EPSILON:g})",
            effect_size=cohens_d(rn, cn))
