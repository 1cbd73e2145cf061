"""Relative shift of the mean row norm: |mean_cur - mean_ref| / mean_ref.

The cheapest and most readable norm check ("documents got 20% longer in
embedding space"). Two unit-norm models both have mean norm 1: the shift is
0 whatever happened, which is not evidence of no drift, so that case is
"not informative" rather than a pass.
"""

from __future__ import annotations

import numpy as np

from .base import DriftResult, NormCache, Statistic, _fmt, norms_degenerate


class NormShift(Statistic):
    """Relative change of the mean L2 norm; effect_size is the signed relative change."""

    name = "normShift"
    default_threshold = 0.05
    space_free = True
    description = "relative shift of the mean row norm"

    def _compute(self, ref: np.ndarray, cur: np.ndarray, threshold: float, seed: int,
                 cache: NormCache) -> DriftResult:
        rn, cn = cache.norms(ref), cache.norms(cur)
        if norms_degenerate(rn, cn):
            return self.constant_norms(threshold, rn)
        mr, mc = float(np.mean(rn)), float(np.mean(cn))
        if mr == 0.0:
            return self.not_informative(threshold, "reference mean norm is 0: a relative norm shift is undefined")
        signed = (mc - mr) / mr
        return self.result(
            abs(signed), threshold,
            "relative mean-norm shift {value} {op} max {threshold} "
            f"(mean norm {_fmt(mr)} -> {_fmt(mc)})",
            effect_size=signed)
