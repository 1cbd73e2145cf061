"""Registry of drift statistics and the single entry point the reconciler calls.

``run_drift(name, reference, current, threshold=None, same_space=True, seed=0)``
returns a ``DriftResult``. Statistics that compare coordinates (not
``space_free``) are refused, with an explanation, when the two samples come
from different model fingerprints (``same_space=False``).
"""

from __future__ import annotations

import numpy as np

from controller.errors import InvalidInput

from .base import DriftResult, NormCache, Statistic
from .calibrate import DEFAULT_SPLITS, NullCalibration, calibrate, calibrate_null
from .cosine_shift import CosineShift
from .js import JS
from .kl import KL
from .ks_dims import KSDims
from .mmd import MMD
from .neighbours import neighbour_overlap
from .norm_shift import NormShift
from .pair_cosine_shift import PairCosineShift
from .psi import PSI
from .wasserstein import Wasserstein

REGISTRY: dict[str, Statistic] = {
    s.name: s for s in (PSI(), KL(), NormShift(), CosineShift(), JS(), Wasserstein(), PairCosineShift(),
                        KSDims(), MMD())
}

#: Why a coordinate-comparing statistic is refused across fingerprints.
_REFUSAL: dict[str, str] = {
    "ksDims": "per-dimension KS compares coordinates",
    "mmd": "MMD compares distances between vectors of the two samples",
}


def get_statistic(name: str) -> Statistic:
    """Registry lookup; unknown names are a user error listing the valid ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InvalidInput(f"unknown drift statistic {name!r}; valid names: {', '.join(sorted(REGISTRY))}",
                           field="statistic", value=name) from None


def refusal(stat: Statistic, threshold: float) -> DriftResult:
    """Not-informative result for a coordinate statistic across two model spaces."""
    what = _REFUSAL.get(stat.name, f"{stat.name} compares coordinates")
    return stat.not_informative(
        threshold, f"{what}; two different models' spaces are unrelated, so it is refused across fingerprints")


def run_drift(name: str, reference: np.ndarray, current: np.ndarray, *, threshold: float | None = None,
              same_space: bool = True, seed: int = 0, cache: NormCache | None = None) -> DriftResult:
    """Run one registered statistic; ``threshold=None`` uses its default.

    ``cache`` lets callers running several statistics on the same matrices
    share the row norms (see ``NormCache``).
    """
    stat = get_statistic(name)
    thr = stat.default_threshold if threshold is None else float(threshold)
    if not same_space and not stat.space_free:
        return refusal(stat, thr)
    return stat.compute(reference, current, thr, seed, cache)


__all__ = ["DEFAULT_SPLITS", "REGISTRY", "DriftResult", "NormCache", "NullCalibration", "Statistic", "calibrate", "calibrate_null",
           "get_statistic",
           "neighbour_overlap", "run_drift"]
