"""Always-valid confidence sequences: intervals that may be looked at after every sample.

A fixed-n 95% interval checked at 20 looks excludes the truth far more than
5% of the time at some look. A confidence sequence (CS) holds at every sample
size simultaneously: P(exists n: truth outside CS_n) <= alpha, so checking it
at every analysis interval, and stopping the first time it excludes a
threshold, keeps the error rate at alpha.

One construction, a mixture martingale closed with Ville's inequality:
`mean_cs` / `difference_cs` / `quantile_cs` use the two-sided normal mixture
boundary (Howard, Ramdas, McAuliffe, Sekhon 2021, eq. 14) with the variance
estimated from the data: the asymptotic confidence sequence of Waudby-Smith,
Arbour, Sinha, Kennedy, Ramdas (2023, "Time-uniform central limit theory"),
valid for any metric with a finite variance (CTR, dwell, latency, the
per-query interleaving preference...). For the difference of two independent
streams (stable and candidate arms of an A/B split) the estimator's variance
is the sum of the arms' variances, as in the two-sample mSPRT of Johari et
al. 2017. A/B gates and the interleaving test share it, so the two designs
are compared under the same discipline.

`rho` is the mixture's width in samples; the boundary is tightest near
`horizon` samples (Waudby-Smith et al.'s choice), loose but valid elsewhere.

Samples are not independent when one user sends many of them: routing is
sticky per routing key, so a heavy user's queries all land in one arm, and
their click habits move that arm's mean. Given each sample's unit (the
routing key it came with), `summarize` estimates the mean's variance across
units instead (`clustered_variance`), never below the per-sample estimate.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

#: Per sample, the unit it belongs to (a routing key's id); None: a unit of its own.
Units = Sequence[Hashable | None]

#: The default number of samples (per arm) at which the normal-mixture boundary is tightest.
DEFAULT_HORIZON = 1000


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    estimate: float

    def as_list(self, digits: int = 6) -> list[float | None]:
        return [_finite(self.lo, digits), _finite(self.hi, digits)]


def _finite(x: float, digits: int) -> float | None:
    """JSON has no infinity: an unbounded side is null."""
    return round(x, digits) if math.isfinite(x) else None


def rho_for(horizon: float, alpha: float) -> float:
    """Mixture width (in samples) that makes the boundary tightest at `horizon` samples."""
    log_term = -2.0 * math.log(alpha)
    return max(horizon, 1.0) / (log_term + math.log(log_term + 1.0))


def normal_mixture_radius(variance: float, n: float, alpha: float, rho: float) -> float:
    """Half-width of the CS of a mean after `n` samples of per-sample `variance`.

    sqrt(variance * (n + rho) / n^2 * log((n + rho) / (rho * alpha^2))): the
    two-sided normal mixture boundary divided by n.
    """
    if n <= 0:
        return math.inf
    return math.sqrt(max(variance, 0.0) * (n + rho) / n**2 * math.log((n + rho) / (rho * alpha**2)))


@dataclass(frozen=True)
class Summary:
    """What the mean CSs need from a stream: its size, mean and per-sample variance."""

    n: int
    mean: float
    variance: float


def binary_summary(successes: int, n: int) -> Summary:
    """A 0/1 stream from its counts, with a variance that never claims certainty from a few samples.

    The smoothed share (k + 1/2) / (n + 1) gives the variance, so ten zeros do
    not read as variance 0.
    """
    p = (successes + 0.5) / (n + 1)
    return Summary(n, successes / n if n else math.nan, p * (1 - p))


def summarize(xs: Sequence[float], units: Units | None = None) -> Summary:
    """0/1 data as in `binary_summary`; other data with the unbiased sample variance.

    With `units`, the variance is the larger of that and `clustered_variance`.
    """
    n = len(xs)
    total = math.fsum(xs)
    if all(x in (0.0, 1.0) for x in xs):
        independent = binary_summary(round(total), n)
    else:
        mean = total / n
        var = math.fsum((x - mean) ** 2 for x in xs) / (n - 1) if n > 1 else math.inf
        independent = Summary(n, mean, var)
    if units is None or n == 0:
        return independent
    return Summary(n, independent.mean, max(independent.variance, clustered_variance(xs, units, independent.mean)))


_OWN = object()  # tags a sample without a unit, so it is a unit of its own


def clustered_variance(xs: Sequence[float], units: Units, mean: float) -> float:
    """Per-sample variance of the mean of `xs` when samples of one unit are correlated.

    The leave-one-unit-out jackknife (CR3 in Cameron & Miller 2015, "A
    practitioner's guide to cluster-robust inference"): with K units, N
    samples, n_u samples and residual e_u = sum of (x - mean) in unit u, the
    mean's variance is (K - 1)/K x sum_u e_u^2 / (N - n_u)^2; this returns N
    times that, the per-sample variance the mixture boundary takes. A unit
    sending a large share of the samples weighs more than in the plain
    sandwich (which under-covers when a few keys dominate). When every sample
    is its own unit it is the unbiased sample variance. Fewer than two units:
    infinite (one user says nothing about the others).
    """
    residual: dict[Hashable, float] = defaultdict(float)
    size: dict[Hashable, int] = defaultdict(int)
    for i, (x, unit) in enumerate(zip(xs, units, strict=True)):
        key = unit if unit is not None else (_OWN, i)
        residual[key] += x - mean
        size[key] += 1
    return jackknife_variance(len(xs), [(residual[u], size[u]) for u in residual])


def jackknife_variance(n: int, units: Sequence[tuple[float, int]], own_squares: float = 0.0, own: int = 0) -> float:
    """N (K - 1)/K sum_u e_u^2 / (N - n_u)^2 from each unit's (residual e_u, samples n_u).

    `own` samples that are units of their own may come as the sum of their
    squared residuals, `own_squares`, instead of one pair each.
    """
    k = len(units) + own
    if k < 2:
        return math.inf
    singles = own_squares / (n - 1) ** 2 if own else 0.0
    return n * (k - 1) / k * (math.fsum(e * e / (n - size) ** 2 for e, size in units) + singles)


def mean_cs(xs: Sequence[float], alpha: float, horizon: float = DEFAULT_HORIZON,
            units: Units | None = None) -> Interval:
    """Asymptotic CS of the mean of `xs` (all samples so far; `units` as in `summarize`)."""
    n = len(xs)
    if n == 0:
        return Interval(-math.inf, math.inf, math.nan)
    return mean_cs_of(summarize(xs, units), alpha, horizon)


def mean_cs_of(summary: Summary, alpha: float, horizon: float = DEFAULT_HORIZON) -> Interval:
    """`mean_cs` from a stream's summary."""
    if summary.n == 0:
        return Interval(-math.inf, math.inf, math.nan)
    r = normal_mixture_radius(summary.variance, summary.n, alpha, rho_for(horizon, alpha))
    return Interval(summary.mean - r, summary.mean + r, summary.mean)


def difference_cs(stable: Sequence[float], candidate: Sequence[float], alpha: float,
                  horizon: float = DEFAULT_HORIZON,
                  units: tuple[Units | None, Units | None] = (None, None)) -> Interval:
    """Asymptotic CS of mean(candidate) - mean(stable) from two independent streams.

    In "total samples" time N = n_s + n_c the estimator's variance is
    sigma_eff^2 / N with sigma_eff^2 = N * (var_c / n_c + var_s / n_s); the
    normal-mixture radius is applied to that, with the mixture tuned for a
    horizon of `horizon` samples per arm. `units`: (stable's, candidate's), as in `summarize`.
    """
    if not stable or not candidate:
        return Interval(-math.inf, math.inf, math.nan)
    return difference_cs_of(summarize(stable, units[0]), summarize(candidate, units[1]), alpha, horizon)


def difference_cs_of(stable: Summary, candidate: Summary, alpha: float,
                     horizon: float = DEFAULT_HORIZON) -> Interval:
    """`difference_cs` from the two streams' summaries (counts are enough for 0/1 data)."""
    if stable.n == 0 or candidate.n == 0:
        return Interval(-math.inf, math.inf, math.nan)
    total = stable.n + candidate.n
    sigma2 = total * (stable.variance / stable.n + candidate.variance / candidate.n)
    r = normal_mixture_radius(sigma2, total, alpha, rho_for(2 * horizon, alpha))
    delta = candidate.mean - stable.mean
    return Interval(delta - r, delta + r, delta)


def quantile_cs(xs: Sequence[float], p: float, alpha: float, horizon: float = DEFAULT_HORIZON) -> Interval:
    """CS of the p-quantile by order statistics (the idea of Howard & Ramdas 2022).

    At the true quantile q the count of samples <= q is Binomial(n, p); the
    normal-mixture boundary on that count (variance p(1-p)) picks the order
    statistics that bracket q. A side with too few samples is unbounded.
    """
    n = len(xs)
    if n == 0:
        return Interval(-math.inf, math.inf, math.nan)
    ordered = sorted(xs)
    u = n * normal_mixture_radius(p * (1 - p), n, alpha, rho_for(horizon, alpha))
    lo_rank = math.floor(n * p - u)  # 1-based order statistic
    hi_rank = math.ceil(n * p + u) + 1
    lo = ordered[lo_rank - 1] if lo_rank >= 1 else -math.inf
    hi = ordered[hi_rank - 1] if hi_rank <= n else math.inf
    estimate = ordered[min(n - 1, max(0, math.ceil(n * p) - 1))]
    return Interval(lo, hi, estimate)


def quantile_difference_cs(stable: Sequence[float], candidate: Sequence[float], p: float, alpha: float,
                           horizon: float = DEFAULT_HORIZON) -> Interval:
    """CS of q_p(candidate) - q_p(stable): two quantile CSs at alpha/2 each (union bound)."""
    s = quantile_cs(stable, p, alpha / 2, horizon)
    c = quantile_cs(candidate, p, alpha / 2, horizon)
    return Interval(c.lo - s.hi, c.hi - s.lo, c.estimate - s.estimate)
