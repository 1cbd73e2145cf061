"""Online gates: candidate against stable on live traffic, decided sequentially (pure).

A gate is ``{metric, maxDrop | maxIncrease | min | max, minSamples}``:

* ``maxDrop d``     fails when candidate - stable < -d (a metric that should not fall: ctr, mrr...)
* ``maxIncrease d`` fails when candidate - stable > d (latency, skip or complaint rate...)
* ``min m`` / ``max m`` bound the candidate's own value (mirror overlap, error rate...)

Thresholds are in the metric's own units (a maxDrop of 0.02 on ctr is two
points; a maxIncrease of 5 on latencyP99 is 5 ms).

Each gate is judged on an always-valid (1 - alpha) confidence sequence
(controller.core.sequential) of the difference (maxDrop/maxIncrease) or of the
candidate's value (min/max). The gate

* fails only when the interval lies entirely on the bad side of the threshold,
* passes only when it lies entirely on the good side,
* is "inconclusive" otherwise, and always below ``minSamples`` on either arm.

Because the interval is a confidence sequence, the gate may be evaluated at
every analysis interval: a candidate as good as stable is aborted with
probability at most alpha however often it is looked at. "Not enough data"
is never a pass; what happens when a step's maxDuration runs out is the
caller's policy (``on_timeout``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from controller.core import sequential as S
from controller.errors import InvalidInput

Decision = Literal["passed", "failed", "inconclusive"]
PASSED: Decision = "passed"
FAILED: Decision = "failed"
INCONCLUSIVE: Decision = "inconclusive"

#: Per-sample means (one value per impression, per dwell event or per mirrored query).
MEAN_METRICS = ("ctr", "clicksPerQuery", "mrr", "dwellMean", "skipRate", "complaintRate", "zeroResultRate",
                "errorRate", "mirrorOverlap", "mirrorRbo", "mirrorJaccard", "mirrorErrorRate")
#: Quantiles of a latency distribution (milliseconds).
QUANTILE_METRICS = {"latencyP50": 0.50, "latencyP95": 0.95, "latencyP99": 0.99,
                    "mirrorLatencyP50": 0.50, "mirrorLatencyP95": 0.95, "mirrorLatencyP99": 0.99}
#: Every metric name a gate may use; "ctr@K" (a click within the first K positions) is also accepted.
METRICS = MEAN_METRICS + tuple(QUANTILE_METRICS)
_CTR_AT = re.compile(r"^ctr@([1-9][0-9]*)$")

KINDS = ("maxDrop", "maxIncrease", "min", "max")
DEFAULT_MIN_SAMPLES = 100
#: Values of ``on_timeout``: what an undecided gate becomes when the caller's time is up.
TIMEOUT_POLICIES = (PASSED, FAILED, INCONCLUSIVE)


def known_metric(metric: str) -> bool:
    return metric in METRICS or bool(_CTR_AT.match(metric))


def quantile_of(metric: str) -> float | None:
    """The quantile a latency metric reads (None for a mean metric)."""
    return QUANTILE_METRICS.get(metric)


@dataclass(frozen=True)
class OnlineGate:
    metric: str
    max_drop: float | None = None
    max_increase: float | None = None
    min: float | None = None
    max: float | None = None
    min_samples: int = DEFAULT_MIN_SAMPLES

    def __post_init__(self) -> None:
        if not known_metric(self.metric):
            raise InvalidInput(f"unknown online metric {self.metric!r}; use one of {', '.join(METRICS)} or "
                               "ctr@K", field="metric", value=self.metric)
        set_ = [k for k, v in self._thresholds() if v is not None]
        if len(set_) != 1:
            raise InvalidInput(f"an online gate on {self.metric} needs exactly one of maxDrop, maxIncrease, "
                               f"min, max (got {', '.join(set_) or 'none'}); write two gates for two bounds",
                               field="gates")
        value = self.threshold
        if not math.isfinite(value) or (self.kind in ("maxDrop", "maxIncrease") and value < 0):
            raise InvalidInput(f"{self.kind} of the online gate on {self.metric} must be a finite number"
                               f"{' >= 0' if self.kind in ('maxDrop', 'maxIncrease') else ''}",
                               field=self.kind, value=value)
        if self.min_samples < 1:
            raise InvalidInput("minSamples must be at least 1", field="minSamples", value=self.min_samples)

    def _thresholds(self) -> list[tuple[str, float | None]]:
        return [("maxDrop", self.max_drop), ("maxIncrease", self.max_increase), ("min", self.min),
                ("max", self.max)]

    @property
    def kind(self) -> str:
        return next(k for k, v in self._thresholds() if v is not None)

    @property
    def threshold(self) -> float:
        return float(next(v for _, v in self._thresholds() if v is not None))

    @property
    def relative(self) -> bool:
        """Judged on candidate - stable (else on the candidate's own value)."""
        return self.kind in ("maxDrop", "maxIncrease")

    @property
    def bound(self) -> float:
        """The threshold on the judged quantity: -maxDrop, +maxIncrease, min or max."""
        return -self.threshold if self.kind == "maxDrop" else self.threshold

    @property
    def higher_is_better(self) -> bool:
        return self.kind in ("maxDrop", "min")


@dataclass(frozen=True)
class OnlineVerdict:
    status: Decision
    gates: list[dict[str, Any]] = field(default_factory=list)
    interleave: dict[str, Any] | None = None
    window: dict[str, float] | None = None
    alpha: float = 0.05

    @property
    def message(self) -> str:
        parts = [g["message"] for g in self.gates]
        if self.interleave is not None:
            parts.append(self.interleave["message"])
        return "; ".join(parts) or "no online gates"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "alpha": self.alpha, "gates": self.gates,
                               "message": self.message}
        if self.interleave is not None:
            out["interleave"] = self.interleave
        if self.window is not None:
            out["window"] = self.window
        return out


def combine(results: Sequence[Decision]) -> Decision:
    """Any failed gate fails; all passed passes; anything else is inconclusive."""
    if any(r == FAILED for r in results):
        return FAILED
    if results and all(r == PASSED for r in results):
        return PASSED
    return INCONCLUSIVE


def judge(interval: S.Interval, bound: float, higher_is_better: bool) -> Decision:
    """Fail only wholly on the bad side of `bound`, pass only wholly on the good side."""
    if higher_is_better:
        return PASSED if interval.lo > bound else FAILED if interval.hi < bound else INCONCLUSIVE
    return PASSED if interval.hi < bound else FAILED if interval.lo > bound else INCONCLUSIVE


def _interval(gate: OnlineGate, stable: Sequence[float], candidate: Sequence[float], alpha: float,
              horizon: float, units: tuple[S.Units | None, S.Units | None]) -> S.Interval:
    p = quantile_of(gate.metric)
    if gate.relative:
        if p is not None:
            return S.quantile_difference_cs(stable, candidate, p, alpha, horizon)
        return S.difference_cs(stable, candidate, alpha, horizon, units)
    if p is not None:
        return S.quantile_cs(candidate, p, alpha, horizon)
    return S.mean_cs(candidate, alpha, horizon, units[1])


def _point(gate: OnlineGate, xs: Sequence[float]) -> float | None:
    if not xs:
        return None
    p = quantile_of(gate.metric)
    return S.quantile_cs(xs, p, 0.5).estimate if p is not None else math.fsum(xs) / len(xs)


def _check_timeout(on_timeout: str | None) -> None:
    if on_timeout is not None and on_timeout not in TIMEOUT_POLICIES:
        raise InvalidInput(f"on_timeout must be one of {', '.join(TIMEOUT_POLICIES)}", field="on_timeout",
                           value=on_timeout)


def decide(stable_samples: Sequence[float], candidate_samples: Sequence[float], gate: OnlineGate,
           alpha: float = 0.05, *, horizon: float | None = None, on_timeout: str | None = None,
           units: tuple[S.Units | None, S.Units | None] = (None, None)) -> dict[str, Any]:
    """One gate's decision from every sample so far (one value per impression, dwell or mirrored query).

    ``horizon`` (samples per arm where the interval is tightest) defaults to
    10 x minSamples. ``on_timeout`` (None while time remains) turns a gate
    still undecided when the caller's maxDuration ran out into that decision,
    with reason "timeout". ``units`` (stable's, candidate's: per sample, the
    routing key's id or None) make a mean's interval account for users who
    send many samples (`sequential.clustered_variance`); quantiles ignore them.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInput("alpha must be between 0 and 1", field="alpha", value=alpha)
    _check_timeout(on_timeout)
    horizon = float(horizon if horizon is not None else 10 * gate.min_samples)
    ns, nc = len(stable_samples), len(candidate_samples)
    value, baseline = _point(gate, candidate_samples), _point(gate, stable_samples)
    enough = nc >= gate.min_samples and (ns >= gate.min_samples or not gate.relative)
    interval = _interval(gate, stable_samples, candidate_samples, alpha, horizon, units)
    if not enough:
        decision, reason = INCONCLUSIVE, "notEnoughSamples"
    else:
        decision = judge(interval, gate.bound, gate.higher_is_better)
        reason = {PASSED: "intervalOnGoodSide", FAILED: "intervalOnBadSide",
                  INCONCLUSIVE: "intervalStraddlesThreshold"}[decision]
    if decision == INCONCLUSIVE and on_timeout is not None:
        decision, reason = on_timeout, "timeout"  # type: ignore[assignment]
    delta = None if value is None or baseline is None else value - baseline
    result = {
        "metric": gate.metric, "kind": gate.kind, "threshold": gate.threshold,
        "value": _round(value), "baseline": _round(baseline), "delta": _round(delta),
        "intervalOf": "delta" if gate.relative else "value", "interval": interval.as_list(),
        "samples": {"stable": ns, "candidate": nc}, "minSamples": gate.min_samples, "alpha": alpha,
        "decision": decision, "reason": reason,
    }
    if units != (None, None) and quantile_of(gate.metric) is None:
        result["units"] = {"stable": _count_units(units[0], ns), "candidate": _count_units(units[1], nc)}
    result["message"] = _gate_message(result)
    return result


def decide_difference(stable: S.Summary, candidate: S.Summary, gate: OnlineGate, alpha: float = 0.05, *,
                      horizon: float | None = None) -> Decision:
    """`decide`'s decision for a maxDrop/maxIncrease gate on a mean metric, from the arms' summaries.

    The same interval and rule as `decide` (which summarises its sample lists
    the same way); simulations that track counts instead of every sample use
    it to look thousands of times cheaply.
    """
    if not gate.relative or quantile_of(gate.metric) is not None:
        raise InvalidInput("decide_difference takes a maxDrop or maxIncrease gate on a mean metric",
                           field="metric", value=gate.metric)
    if min(stable.n, candidate.n) < gate.min_samples:
        return INCONCLUSIVE
    horizon = float(horizon if horizon is not None else 10 * gate.min_samples)
    return judge(S.difference_cs_of(stable, candidate, alpha, horizon), gate.bound, gate.higher_is_better)


def _by_users(users: int | None) -> str:
    return "" if users is None else f" by {users} users"


def _count_units(units: S.Units | None, samples: int) -> int:
    """Distinct routing keys among the samples; a sample without one counts as its own."""
    if units is None:
        return samples
    return len({u for u in units if u is not None}) + sum(u is None for u in units)


def _round(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else round(x, 6)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _gate_message(r: dict[str, Any]) -> str:
    lo, hi = r["interval"]
    of = "delta" if r["intervalOf"] == "delta" else "value"
    interval = f"{1 - r['alpha']:.0%} CS of {of} [{_fmt(lo) if lo is not None else '-inf'}, " \
               f"{_fmt(hi) if hi is not None else '+inf'}]"
    head = f"{r['metric']} {_fmt(r['value'])} vs stable {_fmt(r['baseline'])}" if r["intervalOf"] == "delta" \
        else f"{r['metric']} {_fmt(r['value'])}"
    samples = f"n={r['samples']['candidate']}/{r['samples']['stable']} (candidate/stable)"
    if "units" in r:
        samples += f" from {r['units']['candidate']}/{r['units']['stable']} users"
    why = {"notEnoughSamples": f"not enough samples yet (minSamples {r['minSamples']})",
           "intervalStraddlesThreshold": "interval straddles the threshold",
           "intervalOnGoodSide": "interval clear of the threshold", "intervalOnBadSide": "interval past the threshold",
           "timeout": "undecided at maxDuration"}[r["reason"]]
    return f"{head}, {r['kind']} {_fmt(r['threshold'])}: {r['decision']} ({why}; {interval}; {samples})"


@dataclass
class InterleaveTally:
    """What the preference test needs from a stream of interleaved impressions.

    Per impression: P(candidate wins) and P(stable wins) given its list and
    clicks (`controller.core.interleave.win_probabilities`; a realised
    outcome is 1/0), and whether it got a click. An impression without a
    click says nothing about either ranker and only counts in `queries`; the
    test runs on the clicked ones, so no-click queries do not dilute it.
    Clicked impressions that name a unit (a routing key's id) are also summed
    per unit, so a user who sends many queries weighs as one user in the
    variance (`summary`).
    """

    queries: int = 0
    clicked: int = 0
    wins_candidate: float = 0.0  # expected wins, summed over clicked impressions
    wins_stable: float = 0.0
    sum_vv: float = 0.0  # sums of squares and products of v = P(c) - P(s) and u = P(c) + P(s)
    sum_uu: float = 0.0
    sum_uv: float = 0.0
    #: unit -> [sum of v, sum of u, clicked impressions] of that unit's clicked impressions
    units: dict[Hashable, list[float]] = field(default_factory=dict)
    keyed: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # sum_vv, sum_uu, sum_uv of those

    def add(self, candidate_wins: float, stable_wins: float, clicked: bool = True,
            unit: Hashable | None = None) -> None:
        self.queries += 1
        if not clicked:
            return
        v, u = candidate_wins - stable_wins, candidate_wins + stable_wins
        self.clicked += 1
        self.wins_candidate += candidate_wins
        self.wins_stable += stable_wins
        self.sum_vv, self.sum_uu, self.sum_uv = self.sum_vv + v * v, self.sum_uu + u * u, self.sum_uv + u * v
        if unit is not None:
            sums = self.units.setdefault(unit, [0.0, 0.0, 0.0])
            sums[0], sums[1], sums[2] = sums[0] + v, sums[1] + u, sums[2] + 1
            self.keyed[0], self.keyed[1], self.keyed[2] = self.keyed[0] + v * v, self.keyed[1] + u * u, \
                self.keyed[2] + u * v

    @classmethod
    def of_counts(cls, wins_stable: int, wins_candidate: int, ties: int, unclicked: int = 0) -> InterleaveTally:
        """Realised outcomes: `ties` clicked queries with equal credit, `unclicked` without a click."""
        if min(wins_stable, wins_candidate, ties, unclicked) < 0:
            raise InvalidInput("win, tie and unclicked counts must be >= 0", field="wins",
                               value=(wins_stable, wins_candidate, ties, unclicked))
        decisive = wins_stable + wins_candidate
        return cls(queries=decisive + ties + unclicked, clicked=decisive + ties, wins_candidate=wins_candidate,
                   wins_stable=wins_stable, sum_vv=decisive, sum_uu=decisive,
                   sum_uv=wins_candidate - wins_stable)

    @property
    def users(self) -> int | None:
        """Distinct units among the clicked impressions (one without a unit counts as its own); None
        when no impression named one."""
        if not self.units:
            return None
        return len(self.units) + self.clicked - int(sum(size for _, _, size in self.units.values()))

    @property
    def ties(self) -> float:
        return self.clicked - self.wins_candidate - self.wins_stable

    @property
    def win_share(self) -> float | None:
        decisive = self.wins_candidate + self.wins_stable
        return self.wins_candidate / decisive if decisive > 0 else None

    def summary(self, margin: float = 0.0) -> S.Summary:
        """Per clicked query z = P(c) - P(s) + 2 margin (P(c) + P(s)): mean >= 0 iff win share >= 0.5 - margin.

        The variance carries half a pseudo-query at +1 and half at -1, so ten
        wins in a row do not read as certainty (as `binary_summary` does for
        0/1 data); with units, it is at least `sequential.clustered_variance`
        of the z values.
        """
        n = self.clicked
        if n == 0:
            return S.Summary(0, math.nan, math.inf)
        total = (self.wins_candidate - self.wins_stable) + 2 * margin * (self.wins_candidate + self.wins_stable)
        squares = self.sum_vv + 4 * margin * self.sum_uv + 4 * margin**2 * self.sum_uu
        variance = max((squares + 1.0) / (n + 1) - (total / (n + 1)) ** 2, 0.0)
        if self.units:
            variance = max(variance, self._clustered(margin, total / n, squares))
        return S.Summary(n, total / n, variance)

    def _clustered(self, margin: float, mean: float, squares: float) -> float:
        """`sequential.clustered_variance` of z from the per-unit sums; clicked impressions without a unit
        are units of their own and enter by the sum of their squared residuals."""
        u_weight = 2 * margin
        per_unit = [(v + u_weight * u - mean * size, int(size)) for v, u, size in self.units.values()]
        own = self.clicked - sum(size for _, size in per_unit)
        own_z = (self.wins_candidate - self.wins_stable) + u_weight * (self.wins_candidate + self.wins_stable) \
            - sum(v + u_weight * u for v, u, _ in self.units.values())
        vv, uu, uv = self.keyed
        own_squares = squares - (vv + 2 * u_weight * uv + u_weight**2 * uu)
        own_residuals = max(own_squares - 2 * mean * own_z + mean * mean * own, 0.0)
        return S.jackknife_variance(self.clicked, per_unit, own_residuals, own)


def interleave_decide(tally: InterleaveTally, min_queries: int, alpha: float = 0.05, *, margin: float = 0.0,
                      horizon: float | None = None, on_timeout: str | None = None) -> OnlineVerdict:
    """Sequential preference test on team-draft interleaving.

    The candidate's win share among decided queries is checked against 0.5 -
    margin (margin 0: the candidate must be preferred to pass; a positive
    margin accepts a candidate at most that much less preferred) with the
    same always-valid normal-mixture confidence sequence and the same horizon
    rule (10 x minQueries) as the A/B gates, on the per-clicked-query
    statistic of `InterleaveTally.summary` (a paired test: both rankers are
    judged on the same query by the same user). Below ``min_queries`` clicked
    queries the verdict is inconclusive.
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidInput("alpha must be between 0 and 1", field="alpha", value=alpha)
    if not 0.0 <= margin < 0.5:
        raise InvalidInput("margin must be in [0, 0.5)", field="margin", value=margin)
    _check_timeout(on_timeout)
    horizon = float(horizon if horizon is not None else 10 * max(min_queries, 1))
    interval = S.mean_cs_of(tally.summary(margin), alpha, horizon)
    if tally.clicked < min_queries or tally.clicked == 0:
        decision, reason = INCONCLUSIVE, "notEnoughSamples"
    else:
        decision = judge(interval, 0.0, True)
        reason = {PASSED: "intervalOnGoodSide", FAILED: "intervalOnBadSide",
                  INCONCLUSIVE: "intervalStraddlesThreshold"}[decision]
    if decision == INCONCLUSIVE and on_timeout is not None:
        decision, reason = on_timeout, "timeout"  # type: ignore[assignment]
    share = tally.win_share
    # Chapelle et al.'s Delta over clicked queries: > 0 when the candidate is preferred
    delta = (tally.wins_candidate + tally.ties / 2) / tally.clicked - 0.5 if tally.clicked else None
    lo, hi = interval.as_list()
    detail = {
        "metric": "interleavePreference", "kind": "min", "threshold": 0.5 - margin, "value": _round(share),
        "delta": _round(delta), "intervalOf": "meanPreference", "interval": [lo, hi],
        "wins": {"stable": _round(tally.wins_stable), "candidate": _round(tally.wins_candidate)},
        "ties": _round(tally.ties), "clicked": tally.clicked, "queries": tally.queries,
        "minQueries": min_queries, "alpha": alpha, "decision": decision, "reason": reason,
    }
    if tally.users is not None:
        detail["units"] = tally.users
    detail["message"] = (f"interleaving: candidate won {_fmt(tally.wins_candidate)}, stable "
                         f"{_fmt(tally.wins_stable)}, ties {_fmt(tally.ties)} ({tally.clicked} clicked"
                         f"{_by_users(tally.users)} of {tally.queries} queries, minQueries {min_queries}); "
                         f"candidate win share {_fmt(share)} vs {0.5 - margin:.3g}, {1 - alpha:.0%} CS of the "
                         f"mean preference [{_fmt(lo)}, {_fmt(hi)}] vs 0: {decision}")
    return OnlineVerdict(status=decision, interleave=detail, alpha=alpha)


def verdict(gate_results: Sequence[dict[str, Any]], alpha: float, *, interleave: dict[str, Any] | None = None,
            window: dict[str, float] | None = None) -> OnlineVerdict:
    """The overall verdict of some gate results (and an interleaving result)."""
    decisions = [g["decision"] for g in gate_results] + ([interleave["decision"]] if interleave else [])
    return OnlineVerdict(status=combine(decisions), gates=list(gate_results), interleave=interleave,
                         window=window, alpha=alpha)


def jaccard(a: Sequence[str], b: Sequence[str]) -> float:
    """|A & B| / |A | B| of two result lists (1.0 when both are empty)."""
    sa, sb = set(a), set(b)
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def rbo(a: Sequence[str], b: Sequence[str], p: float = 0.9) -> float:
    """Rank-biased overlap, extrapolated (Webber, Moffat, Zobel 2010, eq. 32), in [0, 1].

    Top-weighted: agreement at rank 1 counts most. Lists of unequal length
    are compared to the shorter one's depth; two empty lists agree fully.
    """
    depth = min(len(a), len(b))
    if depth == 0:
        return 1.0 if not a and not b else 0.0
    seen_a: set[str] = set()
    seen_b: set[str] = set()
    overlap = 0
    total = 0.0
    for d in range(1, depth + 1):
        x, y = a[d - 1], b[d - 1]
        if x == y:
            overlap += 1 if x not in seen_a else 0
        else:
            overlap += (x in seen_b) + (y in seen_a)
        seen_a.add(x)
        seen_b.add(y)
        total += overlap / d * p**d
    return min(1.0, overlap / depth * p**depth + (1 - p) / p * total)


def click_rank(event: dict[str, Any], impression: dict[str, Any]) -> int:
    """The 1-based position the client reported, else the doc's rank in the served list (past its end when
    the doc is not in it): never 0 or negative, which would divide by zero or subtract from an MRR."""
    position = event.get("position")
    if isinstance(position, int) and not isinstance(position, bool) and position >= 1:
        return position
    ids = impression.get("ids") or []
    return ids.index(event.get("docId")) + 1 if event.get("docId") in ids else len(ids) + 1
