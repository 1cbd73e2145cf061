"""Shift of the within-sample random-pair cosine distribution.

For each sample separately, PAIRS random pairs of distinct rows are drawn
(seeded) and their cosine similarities computed; the value is the
Wasserstein-1 distance (scipy.stats.wasserstein_distance) between the two
distributions. Like cosineShift it never compares coordinates across
samples, so it is space-free and valid between two model fingerprints: it
measures how spread-out / anisotropic each space is (e.g. E5's cosines
concentrate near 0.8, MiniLM's near 0.1).

Default threshold 0.05 (cosine units); resolution with 5,000 pairs: SciFact
MiniLM halves give ~0.005-0.01.
"""

from __future__ import annotations

import numpy as np

from controller.errors import CheckError

from .base import DriftResult, NormCache, Statistic, _fmt, wasserstein_1d

#: Number of random pairs drawn per sample.
PAIRS: int = 5000


def random_pair_cosines(x: np.ndarray, norms: np.ndarray, pairs: int, rng: np.random.Generator) -> np.ndarray:
    """Cosines of ``pairs`` uniformly random pairs (i != j) of non-zero rows."""
    keep = np.flatnonzero(norms > 0)
    n = keep.size
    if n < 2:
        raise CheckError("a sample has fewer than 2 non-zero rows: pair cosines are undefined")
    i = rng.integers(0, n, size=pairs)
    j = (i + rng.integers(1, n, size=pairs)) % n  # uniform over j != i
    a, b = keep[i], keep[j]
    dots = np.einsum("ij,ij->i", x[a], x[b]).astype(np.float64)
    return dots / (norms[a] * norms[b])


class PairCosineShift(Statistic):
    """W1 between random within-sample pair-cosine distributions."""

    name = "pairCosineShift"
    default_threshold = 0.05
    space_free = True
    description = f"Wasserstein-1 between cosines of {PAIRS} random within-sample pairs"

    def _compute(self, ref, cur, threshold: float, seed: int, cache: NormCache) -> DriftResult:
        rng = np.random.default_rng(seed)
        cr = random_pair_cosines(ref, cache.norms(ref), PAIRS, rng)
        cc = random_pair_cosines(cur, cache.norms(cur), PAIRS, rng)
        value = wasserstein_1d(cr, cc)
        mr, mc = float(np.mean(cr)), float(np.mean(cc))
        return self.result(
            value, threshold,
            "W1 of random-pair cosine distributions {value} {op} max {threshold} "
            f"({PAIRS} pairs per sample; mean pair cosine {_fmt(mr)} -> {_fmt(mc)})",
            effect_size=mc - mr)
