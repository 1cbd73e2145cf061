"""Share of dimensions whose marginal distribution drifted.

Per dimension, a two-sample Kolmogorov-Smirnov test; the p-values are
adjusted with Benjamini-Hochberg (false discovery rate ALPHA = 0.05) and
the value is the share of dimensions rejected. Each side is sampled to at
most SAMPLE rows (seeded) so the cost does not grow with the corpus.

The statistic D equals scipy.stats.ks_2samp per dimension (computed here for
all dimensions at once from one column-wise sort); the p-value is
ks_2samp's asymptotic one (``method="asymp"``: kstwo.sf(D, round(n*m/(n+m)))),
accurate at these sample sizes and ~100x cheaper than the exact one. kstwo.sf
is itself slow (pure Python per value), so it is evaluated only where the
Kolmogorov limit p = kolmogorov(sqrt(en) * D) is below EXACT_BELOW; larger
p-values keep the limit value. Those dimensions can never be rejected at FDR
<= EXACT_BELOW, so the set of drifted dimensions is the one scipy gives.

Not space-free: it compares coordinate j of one space with coordinate j of
the other, which means nothing across two models.
"""

from __future__ import annotations

import numpy as np

from .base import DriftResult, NormCache, Statistic, _fmt, sample_rows

#: Rows sampled per side.
SAMPLE: int = 1000
#: p-values under this (by the Kolmogorov limit) get ks_2samp's exact asymptotic value.
EXACT_BELOW: float = 0.2
#: Benjamini-Hochberg false discovery rate.
ALPHA: float = 0.05


def ks_statistics(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Two-sided KS statistic of every column of x vs the same column of y.

    Sorts the pooled column once; the empirical CDF difference is evaluated
    only at the last element of each run of tied values, exactly like
    ks_2samp's searchsorted(side="right").
    """
    n1, n2 = x.shape[0], y.shape[0]
    pooled = np.ascontiguousarray(np.concatenate([x, y], axis=0).T)  # (dims, rows): sort along rows
    order = np.argsort(pooled, axis=1)
    values = np.take_along_axis(pooled, order, axis=1)
    c1 = np.cumsum(order < n1, axis=1)
    c2 = np.arange(1, n1 + n2 + 1)[None, :] - c1
    diff = np.abs(c1 / n1 - c2 / n2)
    diff[:, :-1][values[:, :-1] == values[:, 1:]] = 0.0  # only the last of a run of ties counts
    return np.max(diff, axis=1)


def ks_pvalues(d: np.ndarray, n1: int, n2: int) -> np.ndarray:
    """ks_2samp's two-sided asymptotic p-values for statistics ``d``."""
    from scipy.special import kolmogorov  # scipy loads only where a statistic needs it
    from scipy.stats import kstwo

    m, n = sorted([float(n1), float(n2)], reverse=True)
    en = np.round(m * n / (m + n))
    p = kolmogorov(np.sqrt(en) * d)
    small = p < EXACT_BELOW
    if np.any(small):
        p[small] = kstwo.sf(d[small], en)
    return np.clip(p, 0.0, 1.0)


class KSDims(Statistic):
    """Share of dimensions drifted (per-dimension KS, BH FDR 0.05), sampled."""

    name = "ksDims"
    default_threshold = 0.1
    space_free = False
    description = "share of dimensions drifted by per-dimension KS with Benjamini-Hochberg FDR"

    def _compute(self, ref, cur, threshold: float, seed: int, cache: NormCache) -> DriftResult:
        rng = np.random.default_rng(seed)
        x, y = sample_rows(ref, SAMPLE, rng), sample_rows(cur, SAMPLE, rng)
        d = ks_statistics(x, y)
        p = ks_pvalues(d, x.shape[0], y.shape[0])
        from scipy.stats import false_discovery_control

        adjusted = false_discovery_control(p, method="bh")
        rejected = int(np.sum(adjusted < ALPHA))
        share = rejected / d.size
        return self.result(
            share, threshold,
            "share of dimensions drifted {value} {op} max {threshold} "
            f"({rejected}/{d.size} dims, KS with BH FDR {ALPHA}, {x.shape[0]} vs {y.shape[0]} rows; "
            f"median KS D {_fmt(float(np.median(d)))}, max {_fmt(float(np.max(d)))})",
            effect_size=float(np.max(d)), p_value=float(np.min(adjusted)))
