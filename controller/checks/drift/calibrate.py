"""Data-driven thresholds: the null distribution of a statistic on the reference itself.

The reference is split at random into two halves ``splits`` times; the
statistic on half vs half is what "no drift" looks like at this sample size.
The threshold is an upper tolerance bound on the (1 - false_alarm) quantile of
those values (Wilks): with probability ``confidence`` (default 0.99) an
undrifted comparison exceeds it at most ``false_alarm`` of the time. A plain
quantile of 100 splits would only hit the rate on average, and a gate judged
on fresh data would raise somewhat more false alarms half of the time.

Why halves: it is the largest split that keeps both sides the same size. A
comparison of larger samples (the full reference vs a full new version) has a
narrower null, so the threshold is conservative there, never permissive.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from controller.errors import CheckError, InvalidInput
from controller.naming import camel_keys

from .base import NormCache, as_matrix
from .registry import get_statistic

#: Splits of the null distribution. Heavy-tailed nulls (MMD) need about 200 for the
#: tolerance bound to stop swinging between runs; the norm statistics would do with fewer.
DEFAULT_SPLITS = 200


@dataclass(frozen=True)
class NullCalibration:
    """The null distribution of one statistic and the threshold taken from it.

    ``effect_null`` is the (1 - false_alarm) quantile of |effect size| under
    the null: an observed effect above it is larger than reference noise.
    """

    statistic: str
    threshold: float
    false_alarm: float
    splits: int
    sample_size: int
    default_threshold: float
    null_median: float
    null_max: float
    default_false_alarm: float  # share of null splits the default threshold flags
    effect_null: float | None
    confidence: float = 0.99  # probability that the false-alarm rate is at most false_alarm
    guaranteed: bool = True  # False when too few splits for that confidence (the maximum is used)

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict."""
        return camel_keys(asdict(self))


def _validate(false_alarm: float, splits: int) -> None:
    if not 0.0 < false_alarm < 1.0:
        raise InvalidInput(f"false_alarm must be in (0, 1), got {false_alarm!r}", field="false_alarm",
                           value=false_alarm)
    if splits < 1:
        raise InvalidInput(f"splits must be >= 1, got {splits!r}", field="splits", value=splits)


def tolerance_rank(n: int, false_alarm: float, confidence: float) -> tuple[int, bool]:
    """Smallest order statistic r whose coverage exceeds 1 - false_alarm with `confidence`.

    The coverage of the r-th smallest of n null values is Beta(r, n + 1 - r)
    distributed (distribution-free), so P(coverage >= 1 - a) = beta.sf(1 - a, r, n + 1 - r).
    With too few splits no rank reaches the confidence: the maximum is used and flagged.
    """
    ranks = np.arange(1, n + 1)
    from scipy.stats import beta  # scipy.stats costs ~1 s to import: only when calibrating

    ok = beta.sf(1.0 - false_alarm, ranks, n + 1 - ranks) >= confidence
    return (int(ranks[ok][0]), True) if ok.any() else (n, False)


def tolerance_threshold(values: np.ndarray, false_alarm: float, confidence: float) -> tuple[float, bool]:
    v = np.sort(values)
    rank, guaranteed = tolerance_rank(v.size, false_alarm, confidence)
    return float(v[rank - 1]), guaranteed


def calibrate_null(name: str, reference: np.ndarray, *, splits: int = DEFAULT_SPLITS, false_alarm: float = 0.05,
                   seed: int = 0, confidence: float = 0.99) -> NullCalibration:
    """Null distribution of ``name`` over random reference half-vs-half splits."""
    stat = get_statistic(name)
    _validate(false_alarm, splits)
    ref = as_matrix(reference, "reference")
    if ref.shape[0] < 4:
        raise CheckError(f"calibration needs at least 4 reference rows to split, got {ref.shape[0]}")
    rng = np.random.default_rng(seed)
    half = ref.shape[0] // 2
    values: list[float] = []
    effects: list[float] = []
    detail = ""
    cache = NormCache()  # norms of the full reference are computed once, then indexed per split
    norms = cache.norms(ref)
    for i in range(splits):
        perm = rng.permutation(ref.shape[0])
        a, b = ref[perm[:half]], ref[perm[half:]]
        split_cache = NormCache()
        split_cache.put(a, norms[perm[:half]])
        split_cache.put(b, norms[perm[half:]])
        r = stat.compute(a, b, stat.default_threshold, seed + i, split_cache)
        detail = r.detail
        if r.value is not None:
            values.append(r.value)
            if r.effect_size is not None:
                effects.append(abs(r.effect_size))
    if not values:
        raise CheckError(f"{name} is not informative on this reference ({detail}); it cannot be calibrated")
    v = np.asarray(values)
    threshold, guaranteed = tolerance_threshold(v, false_alarm, confidence)
    return NullCalibration(
        statistic=name, threshold=threshold, false_alarm=false_alarm, confidence=confidence,
        guaranteed=guaranteed,
        splits=len(values), sample_size=half, default_threshold=stat.default_threshold,
        null_median=float(np.median(v)), null_max=float(v.max()),
        default_false_alarm=float(np.mean(v > stat.default_threshold)),
        effect_null=float(np.quantile(effects, 1.0 - false_alarm)) if effects else None)


def calibrate(name: str, reference: np.ndarray, *, splits: int = DEFAULT_SPLITS, false_alarm: float = 0.05,
              seed: int = 0) -> float:
    """Threshold of ``name`` for a false-alarm rate, from random reference half-vs-half splits."""
    return calibrate_null(name, reference, splits=splits, false_alarm=false_alarm, seed=seed).threshold
