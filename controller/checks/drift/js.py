"""Jensen-Shannon distance of the row-norm distributions.

Symmetric and bounded in [0, 1] (base 2), so unlike KL it needs no epsilon
for empty bins: the raw proportions on the shared reference-decile bins are
used. Semantics are exactly scipy.spatial.distance.jensenshannon(current,
reference, base=2): the *distance*, i.e. the square root of the divergence.
"""

from __future__ import annotations

from scipy.spatial.distance import jensenshannon

from .base import DriftResult, NormCache, Statistic, cohens_d, norms_degenerate, shared_binned


class JS(Statistic):
    """Jensen-Shannon distance (base 2) of norms on shared reference-decile bins."""

    name = "js"
    default_threshold = 0.1
    space_free = True
    description = "Jensen-Shannon distance (base 2) of row norms on shared reference-decile bins"

    def _compute(self, ref, cur, threshold: float, seed: int, cache: NormCache) -> DriftResult:
        rn, cn = cache.norms(ref), cache.norms(cur)
        if norms_degenerate(rn, cn):
            return self.constant_norms(threshold, rn)
        rp, cp, bins = shared_binned(rn, cn, epsilon=0.0)
        value = float(jensenshannon(cp, rp, base=2))
        return self.result(
            value, threshold,
            "Jensen-Shannon distance of norms {value} {op} max {threshold} "
            f"(base 2, {bins} bins on reference quantiles)",
            effect_size=cohens_d(rn, cn))
