"""Data-driven thresholds: the null distribution of a statistic on the reference itself.

The reference is split at random into two halves ``splits`` times; the
statistic on half vs half is what "no drift" looks like at this sample size.
The (1 - false_alarm) quantile of those values is a threshold with about that
false-alarm rate on undrifted data of half the reference's size.
"""

from __future__ import annotations

import numpy as np

from controller.errors import CheckError, InvalidInput

from .base import as_matrix


def calibrate(name: str, reference: np.ndarray, *, splits: int = 100, false_alarm: float = 0.05,
              seed: int = 0) -> float:
    """(1 - false_alarm) quantile of ``name`` over random reference half-vs-half splits."""
    from . import get_statistic  # late import: the registry imports this module

    stat = get_statistic(name)
    if not 0.0 < false_alarm < 1.0:
        raise InvalidInput(f"false_alarm must be in (0, 1), got {false_alarm!r}", field="false_alarm",
                           value=false_alarm)
    if splits < 1:
        raise InvalidInput(f"splits must be >= 1, got {splits!r}", field="splits", value=splits)
    ref = as_matrix(reference, "reference")
    if ref.shape[0] < 4:
        raise CheckError(f"calibration needs at least 4 reference rows to split, got {ref.shape[0]}")
    rng = np.random.default_rng(seed)
    half = ref.shape[0] // 2
    values: list[float] = []
    for i in range(splits):
        perm = rng.permutation(ref.shape[0])
        r = stat.compute(ref[perm[:half]], ref[perm[half:]], stat.default_threshold, seed + i)
        if r.value is not None:
            values.append(r.value)
    if not values:
        raise CheckError(f"{name} is not informative on this reference ({r.detail}); it cannot be calibrated")
    return float(np.quantile(values, 1.0 - false_alarm))
