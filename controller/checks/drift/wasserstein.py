"""Wasserstein-1 (earth mover's) distance of the row norms, relative to the
reference mean norm.

Binning-free, so it sees shifts inside a decile that PSI/KL miss. The raw
distance is scipy.stats.wasserstein_distance(reference_norms,
current_norms), in norm units; it is divided by the reference mean norm so
one default threshold (0.05 = 5% of the typical norm, like normShift) works
for models whose norms live on different scales. The raw value is in the
detail. Computed on the cached sorted norms with scipy's formula
(``wasserstein_1d_sorted``), equal to scipy's value.
"""

from __future__ import annotations

import numpy as np

from .base import DriftResult, NormCache, Statistic, _fmt, cohens_d, norms_degenerate, wasserstein_1d_sorted


class Wasserstein(Statistic):
    """W1 of norms / reference mean norm."""

    name = "wasserstein"
    default_threshold = 0.05
    space_free = True
    description = "Wasserstein-1 distance of row norms, relative to the reference mean norm"

    def _compute(self, ref, cur, threshold: float, seed: int, cache: NormCache) -> DriftResult:
        rn, cn = cache.norms(ref), cache.norms(cur)
        if norms_degenerate(rn, cn):
            return self.constant_norms(threshold, rn)
        mr = float(np.mean(rn))
        if mr == 0.0:
            return self.not_informative(threshold, "reference mean norm is 0: a relative Wasserstein distance is undefined")
        raw = wasserstein_1d_sorted(cache.sorted_norms(ref), cache.sorted_norms(cur))
        return self.result(
            raw / mr, threshold,
            "Wasserstein-1 of norms relative to reference mean norm {value} {op} max {threshold} "
            f"(raw {_fmt(raw)} over mean norm {_fmt(mr)})",
            effect_size=cohens_d(rn, cn))
