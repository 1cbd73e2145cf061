"""Shift of the cosine-to-centroid distribution, comparable across models.

For each sample separately, every row's cosine similarity to that sample's
own centroid is computed; the value is the Wasserstein-1 distance
(scipy.stats.wasserstein_distance) between the reference and current
distributions of those cosines. Cosines live in [-1, 1] whatever the model,
and each is computed inside its own space, so the statistic is space-free:
it is valid between two model fingerprints (e.g. MiniLM -> E5), where it
measures a change of geometry (anisotropy / concentration around the mean
direction), not of coordinates.

Default threshold 0.05 (in cosine units): on SciFact MiniLM, reference vs
reference random halves give a median 0.005 and a 95th percentile 0.01;
MiniLM vs E5 gives 0.55 (mean cosine to centroid 0.36 -> 0.91).
"""

from __future__ import annotations

import numpy as np

from controller.errors import CheckError

from .base import DriftResult, NormCache, Statistic, _fmt, column_mean, wasserstein_1d


def cosine_to_centroid(x: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Cosine of each non-zero row to the sample centroid (float64 accumulation)."""
    centroid = column_mean(x)
    cnorm = float(np.linalg.norm(centroid))
    if cnorm == 0.0:
        raise CheckError("the sample centroid is the zero vector: cosine to centroid is undefined")
    keep = norms > 0
    dots = x @ centroid.astype(x.dtype, copy=False)
    return dots[keep].astype(np.float64) / (norms[keep] * cnorm)


class CosineShift(Statistic):
    """W1 distance between the cosine-to-own-centroid distributions of the two samples."""

    name = "cosineShift"
    default_threshold = 0.05
    space_free = True
    description = "Wasserstein-1 between distributions of cosine to own-sample centroid"

    def _compute(self, ref: np.ndarray, cur: np.ndarray, threshold: float, seed: int,
                 cache: NormCache) -> DriftResult:
        cr = cosine_to_centroid(ref, cache.norms(ref))
        cc = cosine_to_centroid(cur, cache.norms(cur))
        if cr.size == 0 or cc.size == 0:
            raise CheckError("a sample has only zero vectors: cosine to centroid is undefined")
        value = wasserstein_1d(cr, cc)
        mr, mc = float(np.mean(cr)), float(np.mean(cc))
        return self.result(
            value, threshold,
            "W1 of cosine-to-centroid distributions {value} {op} max {threshold} "
            f"(mean cosine to centroid {_fmt(mr)} -> {_fmt(mc)})",
            effect_size=mc - mr)
