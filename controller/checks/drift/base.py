"""Shared vocabulary of the drift statistics: the result type, the statistic
base class, and the small numeric helpers several statistics reuse.

Why a shared base: the reconciler only ever sees ``DriftResult``; every
statistic must answer the same three questions (value, is it above the
threshold, is the number informative at all) so a gate can never pass
silently on a number that carries no information (e.g. norms of a unit-norm
model).

Norm-based statistics share the row L2 norms through ``NormCache`` so running
the whole battery on large matrices costs about one pass over the data for the
norms instead of one pass per statistic.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np

from controller.errors import CheckError, InvalidInput
from controller.naming import camel_keys

#: Relative spread (std / mean) under which a norm distribution is "constant".
#: Unit-norm float32 models sit around 5e-8; real raw norms around 0.1.
CONSTANT_CV: float = 1e-6

#: Proportions of empty bins are floored at this value, then renormalised, so
#: that log ratios in PSI / KL stay finite (the usual PSI convention).
BIN_EPSILON: float = 1e-4

#: Number of reference-quantile bins shared by both samples.
N_BINS: int = 10


@dataclass(frozen=True)
class DriftResult:
    """Outcome of one drift statistic on one (reference, current) pair.

    ``informative`` is False when the statistic cannot say anything about this
    pair (constant norms, refused across model fingerprints); the reconciler
    must then report "not informative" rather than treat it as a pass.
    """

    statistic: str
    value: float | None
    threshold: float
    drifted: bool
    informative: bool
    detail: str
    effect_size: float | None = None
    p_value: float | None = None

    def to_dict(self) -> dict:
        """Plain JSON-serialisable dict (floats, bools, strings, None), camelCase keys."""
        return camel_keys(asdict(self))


def _fmt(x: float | None) -> str:
    """Format a number for a one-line human detail."""
    if x is None:
        return "n/a"
    if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.3g}"
    return f"{x:.4g}"


class NormCache:
    """Memoises row L2 norms (float64) per matrix object.

    Keyed by ``id`` of the array while holding a reference to it, so an id
    cannot be recycled by another array while the cache lives. Pass one cache
    to several statistics on the same matrices to compute norms only once.
    """

    def __init__(self) -> None:
        self._norms: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._sorted: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def norms(self, x: np.ndarray) -> np.ndarray:
        """Row L2 norms of ``x`` as float64, computed once per matrix."""
        return self._memo(self._norms, x, row_norms)

    def put(self, x: np.ndarray, norms: np.ndarray) -> None:
        """Record norms already known for ``x`` (e.g. rows indexed out of a larger matrix)."""
        self._norms[id(x)] = (x, norms)

    def sorted_norms(self, x: np.ndarray) -> np.ndarray:
        """Sorted row norms (for binning-free 1-D distances), sorted once per matrix."""
        return self._memo(self._sorted, x, lambda a: np.sort(self.norms(a)))

    @staticmethod
    def _memo(table: dict, x: np.ndarray, fn) -> np.ndarray:
        hit = table.get(id(x))
        if hit is not None and hit[0] is x:
            return hit[1]
        value = fn(x)
        table[id(x)] = (x, value)
        return value


def row_norms(x: np.ndarray) -> np.ndarray:
    """Row L2 norms as float64.

    einsum on the native float32 data avoids the (n, d) temporary of
    ``np.linalg.norm`` (one streaming pass); the 384-term float32 sums are
    accurate to ~1e-7 relative, well under ``CONSTANT_CV``.
    """
    sq = np.einsum("ij,ij->i", x, x)
    return np.sqrt(sq, dtype=np.float64)


def wasserstein_1d_sorted(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between two empirical distributions given as SORTED 1-D arrays.

    Same formula as scipy.stats.wasserstein_distance (integral of |F_u - F_v|
    between consecutive pooled values), but reusing already-sorted inputs:
    the pooled sort is a merge of two runs, ~3x faster than scipy on 200k
    values.
    """
    pooled = np.concatenate([u, v])
    pooled.sort(kind="stable")
    deltas = np.diff(pooled)
    u_cdf = np.searchsorted(u, pooled[:-1], side="right") / u.size
    v_cdf = np.searchsorted(v, pooled[:-1], side="right") / v.size
    return float(np.dot(np.abs(u_cdf - v_cdf), deltas))


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between two empirical 1-D distributions (= scipy.stats.wasserstein_distance)."""
    return wasserstein_1d_sorted(np.sort(u), np.sort(v))


def column_mean(x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    """Mean row as float64, summing float32 chunks then accumulating in float64.

    ``x.mean(axis=0, dtype=float64)`` casts the whole matrix (4x slower);
    a plain float32 sum over 200k rows loses ~1e-4 relative precision.
    """
    total = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], chunk):
        total += x[start:start + chunk].sum(axis=0)
    return total / x.shape[0]


def as_matrix(x: np.ndarray, what: str) -> np.ndarray:
    """Validate an (n, d) finite embedding matrix with at least 2 rows."""
    a = np.asarray(x)
    if a.ndim != 2:
        raise InvalidInput(f"{what} must be a 2-D (rows, dims) matrix, got shape {a.shape}",
                           field=what, value=a.shape)
    if a.shape[0] < 2 or a.shape[1] < 1:
        raise CheckError(f"{what} has shape {a.shape}: drift needs at least 2 rows and 1 dimension")
    if not np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32)
    return a


def is_constant(values: np.ndarray) -> bool:
    """True when std / |mean| < CONSTANT_CV (or everything is exactly 0)."""
    m = float(np.mean(values))
    s = float(np.std(values))
    if m == 0.0:
        return s == 0.0
    return s / abs(m) < CONSTANT_CV


def norms_degenerate(ref_norms: np.ndarray, cur_norms: np.ndarray) -> bool:
    """True when both samples have the same constant norm (unit-norm models).

    Then any norm statistic is trivially "no change" whatever happened to the
    vectors, which is not evidence of no drift. If only one side is constant,
    or both are constant at different values, norms did change (e.g. the
    normalisation step was added or removed) and the statistic is computed.
    """
    if not (is_constant(ref_norms) and is_constant(cur_norms)):
        return False
    a, b = float(np.mean(ref_norms)), float(np.mean(cur_norms))
    return abs(a - b) <= CONSTANT_CV * max(abs(a), abs(b), 1e-300)


def shared_bin_edges(ref_values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Interior edges at the reference deciles (duplicates dropped).

    Both samples are binned on these same edges with outermost bins open to
    -inf / +inf, so current values outside the reference range still land in
    a bin. Binning each sample with its own ``np.histogram`` range would hide
    a pure location shift: that is the classic PSI bug.
    """
    qs = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.unique(np.quantile(ref_values, qs))


def bin_proportions(values: np.ndarray, interior_edges: np.ndarray,
                    epsilon: float = BIN_EPSILON) -> np.ndarray:
    """Proportions per bin (-inf, e1], (e1, e2], ..., (ek, +inf).

    Empty bins are floored at ``epsilon`` and the vector renormalised so log
    ratios stay finite; ``epsilon=0`` returns the raw proportions.
    """
    idx = np.searchsorted(interior_edges, values, side="left")
    counts = np.bincount(idx, minlength=interior_edges.size + 1).astype(np.float64)
    p = counts / counts.sum()
    if epsilon <= 0.0:
        return p
    p = np.maximum(p, epsilon)
    return p / p.sum()


def shared_binned(ref_values: np.ndarray, cur_values: np.ndarray,
                  epsilon: float = BIN_EPSILON) -> tuple[np.ndarray, np.ndarray, int]:
    """(reference proportions, current proportions, number of bins) on shared edges."""
    edges = shared_bin_edges(ref_values)
    return (bin_proportions(ref_values, edges, epsilon), bin_proportions(cur_values, edges, epsilon),
            edges.size + 1)


def sample_rows(x: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``size`` rows drawn without replacement (all rows, unshuffled, if fewer).

    Sampled statistics cost O(size^2) or O(size * d); sampling keeps their
    cost independent of corpus size at a documented, seeded resolution.
    """
    if x.shape[0] <= size:
        return x
    idx = np.sort(rng.choice(x.shape[0], size=size, replace=False))
    return x[idx]


def cohens_d(ref: np.ndarray, cur: np.ndarray) -> float | None:
    """Standardised mean difference (cur - ref) / pooled sd; None if sd is 0."""
    va, vb = float(np.var(ref, ddof=1)), float(np.var(cur, ddof=1))
    na, nb = ref.size, cur.size
    pooled = ((na - 1) * va + (nb - 1) * vb) / max(na + nb - 2, 1)
    if pooled <= 0.0:
        return None
    return (float(np.mean(cur)) - float(np.mean(ref))) / float(np.sqrt(pooled))


def not_finite_reason(ref: np.ndarray, cur: np.ndarray) -> str:
    """Why a statistic on these samples came out NaN or inf (it runs only then: it reads every value)."""
    largest = max(float(np.max(np.abs(ref))), float(np.max(np.abs(cur))))
    if not math.isfinite(largest):
        return "the vectors hold NaN or inf"
    dtype = np.result_type(ref.dtype, cur.dtype)
    # a squared norm or a dot product sums dims products of two values: it overflows past the type's maximum
    if largest * largest * max(ref.shape[1], cur.shape[1]) > float(np.finfo(dtype).max):
        return f"the vectors overflow {dtype} (largest |value| {_fmt(largest)}: a squared norm exceeds its maximum)"
    return "its arithmetic gave NaN or inf on these vectors"


class Statistic:
    """One drift statistic. Subclasses set the class attributes and
    implement ``_compute``; ``compute`` validates input first.

    ``space_free`` is True when the statistic only uses norms or similarities
    computed within each sample, so it stays meaningful when reference and
    current come from two different models (different fingerprints).
    """

    name: ClassVar[str]
    default_threshold: ClassVar[float]
    space_free: ClassVar[bool]
    description: ClassVar[str] = ""

    def compute(self, reference: np.ndarray, current: np.ndarray, threshold: float,
                seed: int = 0, cache: NormCache | None = None) -> DriftResult:
        """Compare ``current`` against ``reference``; ``value > threshold`` means drift."""
        ref = as_matrix(reference, "reference")
        cur = as_matrix(current, "current")
        if not self.space_free and ref.shape[1] != cur.shape[1]:
            raise CheckError(f"{self.name} compares coordinates but reference has {ref.shape[1]} "
                             f"dimensions and current {cur.shape[1]}")
        # overflow and NaN are caught on the result below and reported as such; numpy's warnings would only
        # add lines about matmul and reduce to the verb's output
        with np.errstate(over="ignore", invalid="ignore"):
            r = self._compute(ref, cur, float(threshold), int(seed), cache or NormCache())
        return self._finite(r, ref, cur)

    def _finite(self, r: DriftResult, ref: np.ndarray, cur: np.ndarray) -> DriftResult:
        """NaN compares False with any threshold, so a NaN statistic would read as "ok" (and print NaN, which is
        not JSON): a statistic that is not finite is "not informative" with the reason, never a pass."""
        if r.value is not None and not math.isfinite(r.value):
            return self.not_informative(r.threshold, f"{self.name} is not finite ({r.value}): "
                                                     f"{not_finite_reason(ref, cur)}; not informative")
        extras = {"effect_size": r.effect_size, "p_value": r.p_value}
        bad = {k: None for k, v in extras.items() if v is not None and not math.isfinite(v)}
        return replace(r, **bad) if bad else r

    def _compute(self, ref: np.ndarray, cur: np.ndarray, threshold: float, seed: int,
                 cache: NormCache) -> DriftResult:
        raise NotImplementedError

    # helpers for subclasses -------------------------------------------------
    def result(self, value: float, threshold: float, detail_fmt: str, *,
               effect_size: float | None = None, p_value: float | None = None) -> DriftResult:
        """Build an informative result; ``detail_fmt`` gets {value}, {op}, {threshold}."""
        drifted = bool(value > threshold)
        detail = detail_fmt.format(value=_fmt(value), op=">" if drifted else "<=",
                                   threshold=_fmt(threshold))
        return DriftResult(self.name, float(value), threshold, drifted, True, detail,
                           effect_size=None if effect_size is None else float(effect_size),
                           p_value=None if p_value is None else float(p_value))

    def not_informative(self, threshold: float, detail: str) -> DriftResult:
        """A result that must be reported as "not informative", never as a pass."""
        return DriftResult(self.name, None, threshold, False, False, detail)

    def constant_norms(self, threshold: float, ref_norms: np.ndarray) -> DriftResult:
        """The unit-norm case shared by all norm statistics."""
        return self.not_informative(
            threshold,
            f"norms are constant ({_fmt(float(np.mean(ref_norms)))} in both samples, unit-norm model): "
            f"{self.name} on norms is not informative")


class BinnedNormStatistic(Statistic):
    """A divergence of the two norm distributions on shared reference-decile bins.

    PSI, KL and JS differ only in the score of the two proportion vectors;
    the norms, the unit-norm refusal, the shared bins and the effect size are
    the same, so they live here once.
    """

    epsilon: ClassVar[float] = BIN_EPSILON

    def _score(self, ref_p: np.ndarray, cur_p: np.ndarray, bins: int) -> tuple[float, str]:
        """(value, detail format with {value} {op} {threshold})."""
        raise NotImplementedError

    def _compute(self, ref: np.ndarray, cur: np.ndarray, threshold: float, seed: int,
                 cache: NormCache) -> DriftResult:
        rn, cn = cache.norms(ref), cache.norms(cur)
        if norms_degenerate(rn, cn):
            return self.constant_norms(threshold, rn)
        rp, cp, bins = shared_binned(rn, cn, epsilon=self.epsilon)
        value, detail = self._score(rp, cp, bins)
        return self.result(value, threshold, detail, effect_size=cohens_d(rn, cn))
