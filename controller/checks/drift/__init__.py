"""Registry of drift statistics and the single entry point the reconciler calls.

``run_drift(name, reference, current, threshold=None, same_space=True, seed=0)``
returns a ``DriftResult``. Statistics that compare coordinates (not
``space_free``) are refused, with an explanation, when the two samples come
from different model fingerprints (``same_space=False``).
"""

from __future__ import annotations

import numpy as np

from .base import DriftResult, NormCache, Statistic
from .calibrate import DEFAULT_SPLITS, NullCalibration, calibrate, calibrate_null
from .neighbours import neighbour_overlap
from .registry import _REFUSAL, REGISTRY, get_statistic


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
