"""Paired statistics for comparing two index versions on the same queries.

A promotion gate must not act on noise: a 0.5-point nDCG drop on 300 queries
may be chance. Because old and new are scored on the same golden queries, the
per-query differences are paired, and a bootstrap over queries of the mean
difference gives an interval without assuming normality. Everything is
seeded so a plan computed twice gives the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controller.errors import CheckError, InvalidInput
from controller.manifest.defaults import DEFAULT_CONFIDENCE

# Bound the (draws x n) index matrix to ~4M cells (32 MB) per chunk so a
# 10k-query set with 10k draws does not allocate gigabytes at once.
_MAX_CELLS = 4_000_000


@dataclass(frozen=True)
class PairedComparison:
    """Mean old/new, mean delta (new - old) and its percentile bootstrap CI."""

    mean_old: float
    mean_new: float
    mean_delta: float
    ci_low: float
    ci_high: float
    confidence: float
    n: int
    n_boot: int
    seed: int


def paired_bootstrap(old: np.ndarray, new: np.ndarray, confidence: float = DEFAULT_CONFIDENCE,
                     n_boot: int = 2000, seed: int = 0) -> PairedComparison:
    """Percentile bootstrap CI of mean(new - old), resampling queries in pairs.

    Deterministic for a given seed (numpy Generator(PCG64)). Vectorised: each
    chunk of draws is one (draws, n) index matrix and one mean over axis 1.
    """
    old_a, new_a = _paired_arrays(old, new)
    _check_params(confidence, n_boot)
    delta = new_a - old_a
    boot = _bootstrap_means(delta, n_boot, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return PairedComparison(
        mean_old=float(old_a.mean()), mean_new=float(new_a.mean()),
        mean_delta=float(delta.mean()), ci_low=float(low), ci_high=float(high),
        confidence=float(confidence), n=int(delta.size), n_boot=int(n_boot),
        seed=int(seed))


def most_regressed(query_ids: Sequence[str], old: np.ndarray, new: np.ndarray,
                   n: int = 5) -> list[tuple[str, float, float]]:
    """Queries that dropped the most, (qid, old, new), largest drop first.

    Only queries that actually got worse are listed (so fewer than n may come
    back); ties are ordered by query id so reports are stable.
    """
    old_a, new_a = _paired_arrays(old, new)
    if len(query_ids) != old_a.size:
        raise CheckError(f"{len(query_ids)} query ids for {old_a.size} scores; "
                         "per-query arrays must align with the query ids")
    delta = new_a - old_a
    ids = np.asarray([str(q) for q in query_ids], dtype=str)
    order = np.lexsort((ids, delta))
    order = order[delta[order] < 0][: max(n, 0)]
    return [(str(ids[i]), float(old_a[i]), float(new_a[i])) for i in order]


def _paired_arrays(old: np.ndarray, new: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-D float arrays of equal, non-zero length with finite values."""
    old_a = np.asarray(old, dtype=np.float64).ravel()
    new_a = np.asarray(new, dtype=np.float64).ravel()
    if old_a.size != new_a.size:
        raise CheckError(f"cannot pair {old_a.size} old scores with {new_a.size} "
                         "new scores; evaluate both on the same golden set")
    if old_a.size == 0:
        raise CheckError("cannot compare on zero queries; the golden set is empty")
    if not (np.isfinite(old_a).all() and np.isfinite(new_a).all()):
        raise CheckError("per-query scores contain NaN or infinity")
    return old_a, new_a


def _check_params(confidence: float, n_boot: int) -> None:
    """Reject settings that make the interval meaningless."""
    if not 0.0 < confidence < 1.0:
        raise InvalidInput(f"confidence {confidence!r} must be between 0 and 1 "
                           "exclusive, e.g. 0.95", field="confidence", value=confidence)
    if int(n_boot) != n_boot or n_boot < 1:
        raise InvalidInput(f"n_boot {n_boot!r} must be a positive integer, e.g. 2000",
                           field="n_boot", value=n_boot)


def _bootstrap_means(delta: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """n_boot means of delta resampled with replacement, chunked for memory."""
    n = delta.size
    per_chunk = max(1, _MAX_CELLS // n)
    out = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = delta[idx].mean(axis=1)
    return out
