"""Exact click-model probabilities, for rollouts long enough to measure small quality gaps.

A small nDCG gap takes A/B tests hundreds of thousands of queries to see, too
many to simulate click by click. The two quantities the decisions use have
exact probabilities under the cascade model (controller.simulate.clicks):

* a list gets at least one click with 1 - prod_r (1 - examination(r) x
  p_click(r)): the user only stops after a click, so stopping never hides
  the first one;
* a team-draft list's winner (more credited clicks) follows from a dynamic
  programme over the ranks on the credit difference, averaged over the
  2^ceil(k/2) equally likely coin sequences of the draft (the coin is only
  flipped when both teams have the same size).

Drawing a query, then a Bernoulli (A/B) or a three-way outcome
(interleaving), therefore has exactly the distribution of `simulate()` on
that query, and tests check it against click-by-click simulation. Counts are
drawn in numpy blocks between looks, and every look is judged by the
service's own decisions: `decide_difference` (the A/B gate's interval and
rule from counts) and `interleave_decide`.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from controller.core import interleave as IL
from controller.core import online as O
from controller.core import sequential as S
from controller.simulate.clicks import ClickModel

Rankings = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]


def _click_terms(ranking: Sequence[str], relevant: Container[str], model: ClickModel) -> list[tuple[float, float]]:
    """Per rank: (probability of a click, probability of stopping after it)."""
    terms = []
    for rank, doc in enumerate(ranking, start=1):
        rel = doc in relevant
        terms.append((model.examination(rank) * (model.p_rel if rel else model.p_nonrel),
                      model.p_stop if rel else model.p_stop_nonrel))
    return terms


def click_probability(ranking: Sequence[str], relevant: Container[str], model: ClickModel = ClickModel()) -> float:
    """P(the list gets at least one click): the per-impression mean of the ctr metric."""
    return 1.0 - math.prod(1.0 - click for click, _ in _click_terms(ranking, relevant, model))


def _credit_difference(merged: Sequence[str], teams: Sequence[str], relevant: Container[str],
                       model: ClickModel) -> dict[int, float]:
    """Distribution of candidate-credited minus stable-credited clicks on one merged list."""
    scanning: dict[int, float] = {0: 1.0}
    stopped: dict[int, float] = defaultdict(float)
    for (click, stop), team in zip(_click_terms(merged, relevant, model), teams):
        step = 1 if team == IL.CANDIDATE else -1
        nxt: dict[int, float] = defaultdict(float)
        for diff, p in scanning.items():
            nxt[diff] += p * (1.0 - click)
            nxt[diff + step] += p * click * (1.0 - stop)
            stopped[diff + step] += p * click * stop
        scanning = nxt
    for diff, p in stopped.items():
        scanning[diff] = scanning.get(diff, 0.0) + p
    return scanning


class _Coins:
    """Stands in for random.Random in team_draft: replays one fixed sequence of coin flips."""

    def __init__(self, flips: Sequence[bool]) -> None:
        self._flips = iter(flips)

    def random(self) -> float:
        return 0.0 if next(self._flips) else 0.99


def interleave_probabilities(stable: Sequence[str], candidate: Sequence[str], relevant: Container[str],
                             model: ClickModel = ClickModel(), k: int = 10) -> tuple[float, float, float]:
    """P(stable wins), P(candidate wins), P(tie) of one team-draft impression of this query."""
    flips = (k + 1) // 2  # ties in team size happen before picks 1, 3, 5...
    totals = [0.0, 0.0, 0.0]
    sequences = list(itertools.product((True, False), repeat=flips))
    for seq in sequences:
        merged, teams = IL.team_draft(stable[:k], candidate[:k], k, _Coins(seq))  # type: ignore[arg-type]
        for diff, p in _credit_difference(merged, teams, relevant, model).items():
            totals[0 if diff < 0 else 1 if diff > 0 else 2] += p
    return totals[0] / len(sequences), totals[1] / len(sequences), totals[2] / len(sequences)


def _relevant(qrels: Qrels) -> dict[str, frozenset[str]]:
    return {q: frozenset(d for d, g in docs.items() if g > 0) for q, docs in qrels.items()}


@dataclass(frozen=True)
class Pair:
    """Per-query exact probabilities of one (stable, candidate, click model) pair."""

    ctr_stable: np.ndarray  # (Q,)
    ctr_candidate: np.ndarray  # (Q,)
    interleave: np.ndarray  # (Q, 3): stable wins, candidate wins, tie

    @classmethod
    def build(cls, stable: Rankings, candidate: Rankings, qrels: Qrels, model: ClickModel = ClickModel(),
              k: int = 10) -> Pair:
        relevant = _relevant(qrels)
        qids = sorted(q for q in qrels if q in stable and q in candidate)
        if not qids:
            raise ValueError("no golden query has a ranking from both versions")
        return cls(np.array([click_probability(stable[q][:k], relevant[q], model) for q in qids]),
                   np.array([click_probability(candidate[q][:k], relevant[q], model) for q in qids]),
                   np.array([interleave_probabilities(stable[q], candidate[q], relevant[q], model, k)
                             for q in qids]))

    @property
    def ctr_gap(self) -> float:
        """Candidate minus stable CTR (queries drawn uniformly)."""
        return float(self.ctr_candidate.mean() - self.ctr_stable.mean())

    @property
    def win_share(self) -> float:
        """The candidate's expected share of decisive interleaved queries."""
        wins = self.interleave[:, :2].mean(axis=0)
        return float(wins[1] / wins.sum()) if wins.sum() else 0.5


def look_points(every: int, growth: float, max_queries: int) -> list[int]:
    """The queries at which rollouts.run_ab/run_interleave look (their `_Looks` schedule), up to max_queries."""
    points, due = [], every
    while True:
        n = -(-due // every) * every  # the first multiple of `every` at or after `due`
        if n > max_queries:
            return points
        points.append(n)
        due = n + max(every, int(growth * n))


@dataclass(frozen=True)
class Outcome:
    decision: str  # "passed" | "failed" | "inconclusive" (undecided at the last look)
    queries: int  # queries when it decided (the last look when undecided)


def ab_runs(pair: Pair, gate: O.OnlineGate, looks: Sequence[int], *, seed: int, alpha: float = 0.05,
            weight: float = 0.5, horizons: Sequence[float | None] = (None,)) -> list[Outcome]:
    """One A/B rollout on the ctr metric: each query goes to the candidate with probability `weight`.

    The same stream of queries is judged with each mixture `horizon` (None:
    the gate's default, 10 x minSamples per arm), one Outcome per horizon, so
    a table can show A/B at its best tuning without a second random stream.
    """
    rng = np.random.default_rng(seed)
    n_queries = len(pair.ctr_stable)
    n = n_c = clicks_s = clicks_c = 0
    decided: dict[int, Outcome] = {}
    for look in looks:
        m = look - n
        q = rng.integers(n_queries, size=m)
        to_candidate = rng.random(m) < weight
        clicked = rng.random(m) < np.where(to_candidate, pair.ctr_candidate[q], pair.ctr_stable[q])
        n, n_c = look, n_c + int(to_candidate.sum())
        clicks_c += int((clicked & to_candidate).sum())
        clicks_s += int((clicked & ~to_candidate).sum())
        stable, candidate = S.binary_summary(clicks_s, n - n_c), S.binary_summary(clicks_c, n_c)
        for i, horizon in enumerate(horizons):
            if i not in decided:
                decision = O.decide_difference(stable, candidate, gate, alpha, horizon=horizon)
                if decision != O.INCONCLUSIVE:
                    decided[i] = Outcome(decision, n)
        if len(decided) == len(horizons):
            break
    return [decided.get(i, Outcome(O.INCONCLUSIVE, n)) for i in range(len(horizons))]


def preference_summary(wins_stable: int, wins_candidate: int, ties: int) -> S.Summary:
    """Per-query preference +1 (candidate won), -1 (stable won), 0 (tie): Chapelle et al.'s 2 x Delta."""
    n = wins_stable + wins_candidate + ties
    if n == 0:
        return S.Summary(0, math.nan, math.inf)
    mean = (wins_candidate - wins_stable) / n
    second = (wins_candidate + wins_stable) / n
    return S.Summary(n, mean, (second - mean**2) * n / (n - 1) if n > 1 else math.inf)


def interleave_runs(pair: Pair, looks: Sequence[int], *, seed: int, alpha: float = 0.05, min_queries: int = 10,
                    margin: float = 0.0, horizons: Sequence[float | None] = (None,)) -> list[Outcome]:
    """One rollout that interleaves every query, judged at every look; one Outcome per entry of `horizons`.

    None: the service's test (`interleave_decide`, exact Beta-Binomial CS of
    the candidate's win share). A number: the mean per-query preference (see
    `preference_summary`) judged by the normal-mixture CS tuned to that many
    queries, the A/B gate's machinery, so both designs can be compared at
    their best tuning (margin 0 only: a margin is a win share, defined on decisive queries).
    """
    if margin and any(h is not None for h in horizons):
        raise ValueError("a margin applies to the service's test (horizon None) only")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(pair.interleave, axis=1)
    n = wins_s = wins_c = 0
    decided: dict[int, Outcome] = {}
    for look in looks:
        m = look - n
        q = rng.integers(len(cumulative), size=m)
        u = rng.random(m)
        stable_won = u < cumulative[q, 0]
        candidate_won = ~stable_won & (u < cumulative[q, 1])
        n, wins_s, wins_c = look, wins_s + int(stable_won.sum()), wins_c + int(candidate_won.sum())
        for i, horizon in enumerate(horizons):
            if i in decided:
                continue
            if horizon is None:
                decision = O.interleave_decide(wins_s, wins_c, n - wins_s - wins_c, min_queries, alpha,
                                               margin=margin).status
            elif n < min_queries:
                decision = O.INCONCLUSIVE
            else:
                interval = S.mean_cs_of(preference_summary(wins_s, wins_c, n - wins_s - wins_c), alpha, horizon)
                decision = O.judge(interval, 0.0, True)
            if decision != O.INCONCLUSIVE:
                decided[i] = Outcome(decision, n)
        if len(decided) == len(horizons):
            break
    return [decided.get(i, Outcome(O.INCONCLUSIVE, n)) for i in range(len(horizons))]


def interleave_run(pair: Pair, looks: Sequence[int], *, seed: int, alpha: float = 0.05, min_queries: int = 10,
                   margin: float = 0.0) -> Outcome:
    """One rollout that interleaves every query, judged by the service's preference test at every look."""
    return interleave_runs(pair, looks, seed=seed, alpha=alpha, min_queries=min_queries, margin=margin)[0]
