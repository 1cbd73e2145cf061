"""Jensen-Shannon distance of the row-norm distributions.

Symmetric and bounded in [0, 1] (base 2), so unlike KL it needs no epsilon
for empty bins: the raw proportions on the shared reference-decile bins are
used. Semantics are exactly scipy.spatial.distance.jensenshannon(current,
reference, base=2): the *distance*, i.e. the square root of the divergence.
"""

from __future__ import annotations


import numpy as np

from .base import BinnedNormStatistic


class JS(BinnedNormStatistic):
    """Jensen-Shannon distance (base 2) of norms on shared reference-decile bins."""

    name = "js"
    default_threshold = 0.1
    space_free = True
    description = "Jensen-Shannon distance (base 2) of row norms on shared reference-decile bins"
    epsilon = 0.0  # bounded divergence: raw proportions, exactly scipy's semantics

    def _score(self, ref_p: np.ndarray, cur_p: np.ndarray, bins: int) -> tuple[float, str]:
        from scipy.spatial.distance import jensenshannon  # scipy loads only where a statistic needs it

        return float(jensenshannon(cur_p, ref_p, base=2)), (
            "Jensen-Shannon distance of norms {value} {op} max {threshold} "
            f"(base 2, {bins} bins on reference quantiles)")
