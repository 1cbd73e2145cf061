"""Population Stability Index on row L2 norms.

Why norms: for models whose vectors are not normalised the norm carries
signal (length, content density) and is comparable across model versions;
PSI is the usual credit-risk style stability score with well-known rules of
thumb (< 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift).
"""

from __future__ import annotations

import numpy as np

from .base import BIN_EPSILON, BinnedNormStatistic


def psi(ref_p: np.ndarray, cur_p: np.ndarray) -> float:
    """PSI = sum (cur - ref) * ln(cur / ref) over shared bins (symmetric KL)."""
    return float(np.sum((cur_p - ref_p) * np.log(cur_p / ref_p)))


class PSI(BinnedNormStatistic):
    """PSI of the norm distributions on 10 reference-decile bins shared by both samples."""

    name = "psi"
    default_threshold = 0.2
    space_free = True
    description = "population stability index of row norms on shared reference-decile bins"

    def _score(self, ref_p: np.ndarray, cur_p: np.ndarray, bins: int) -> tuple[float, str]:
        return psi(ref_p, cur_p), ("psi of norms {value} {op} max {threshold} "
                                   f"({bins} bins on reference quantiles, empty bins floored at {BIN_EPSILON:g})")
