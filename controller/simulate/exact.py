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
  flipped when both teams have the same size);
* what the service's preference test records for an interleaved impression,
  P(candidate wins) and P(stable wins) over the drafts that give its list
  (`IL.win_probabilities`), takes few values: every merged list and click
  pattern (2^k of them, each with its cascade probability) is enumerated
  once per query and equal values are merged (`rao_blackwell_atoms`).

Drawing a query, then a Bernoulli (A/B), a realised team-draft outcome or
an atom (interleaving), therefore has exactly the distribution of `simulate()` on
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


def _drafts(stable: Sequence[str], candidate: Sequence[str], k: int) -> dict[tuple[str, ...], np.ndarray]:
    """Every merged list a team draft can give, with the teams (+1 candidate, -1 stable) of each coin
    sequence that gives it, one row per sequence (all 2^ceil(k/2) sequences are equally likely)."""
    by_list: dict[tuple[str, ...], list[list[int]]] = defaultdict(list)
    for seq in itertools.product((True, False), repeat=(k + 1) // 2):
        merged, teams = IL.team_draft(stable[:k], candidate[:k], k, _Coins(seq))  # type: ignore[arg-type]
        by_list[tuple(merged)].append([1 if t == IL.CANDIDATE else -1 for t in teams])
    return {m: np.array(rows) for m, rows in by_list.items()}


def _pattern_probabilities(terms: Sequence[tuple[float, float]], patterns: np.ndarray) -> np.ndarray:
    """P(exactly these positions clicked) under the cascade, per row of a (patterns x ranks) 0/1 array."""
    scanning = np.ones(len(patterns))
    stopped = np.zeros(len(patterns))
    for rank, (click, stop) in enumerate(terms):
        hit = patterns[:, rank].astype(bool)
        stopped = np.where(hit, scanning * click * stop, stopped)  # a click after stopping is impossible
        scanning = np.where(hit, scanning * click * (1.0 - stop), scanning * (1.0 - click))
    return scanning + stopped


def rao_blackwell_atoms(stable: Sequence[str], candidate: Sequence[str], relevant: Container[str],
                        model: ClickModel = ClickModel(), k: int = 10) -> np.ndarray:
    """Distribution of what the service's preference test records for one interleaved impression.

    Rows (probability, P(candidate wins), P(stable wins), clicked): the values
    of `IL.win_probabilities` over every merged list and click pattern,
    equal values merged.
    """
    rows = []
    drafts = _drafts(stable, candidate, k)
    sequences = sum(len(t) for t in drafts.values())
    for merged, teams in drafts.items():
        width = len(merged)
        patterns = (np.arange(2**width)[:, None] >> np.arange(width)) & 1
        probability = _pattern_probabilities(_click_terms(merged, relevant, model), patterns)
        keep = probability > 0
        patterns, probability = patterns[keep], probability[keep] * len(teams) / sequences
        diffs = patterns @ teams.T  # candidate-credited minus stable-credited clicks, per coin sequence
        rows.append(np.column_stack([probability, (diffs > 0).mean(axis=1), (diffs < 0).mean(axis=1),
                                     patterns.any(axis=1)]))
    table = np.concatenate(rows)
    # one integer per (P(c), P(s), clicked): the shares are multiples of 1/n for some n <= 2^ceil(k/2)
    scale = 2 * 10**6
    code = (np.round(table[:, 1] * 10**6) * scale + np.round(table[:, 2] * 10**6)) * 2 + table[:, 3]
    _, first, inverse = np.unique(code.astype(np.int64), return_index=True, return_inverse=True)
    return np.column_stack([np.bincount(inverse.ravel(), weights=table[:, 0]), table[first, 1:]])


@dataclass(frozen=True)
class Pair:
    """Per-query exact probabilities of one (stable, candidate, click model) pair."""

    ctr_stable: np.ndarray  # (Q,)
    ctr_candidate: np.ndarray  # (Q,)
    interleave: np.ndarray  # (Q, 4): realised team-draft outcome: stable wins, candidate wins, clicked tie, no click
    atoms: np.ndarray  # (Q, A, 4): rao_blackwell_atoms per query, padded with probability 0

    @classmethod
    def build(cls, stable: Rankings, candidate: Rankings, qrels: Qrels, model: ClickModel = ClickModel(),
              k: int = 10) -> Pair:
        relevant = _relevant(qrels)
        qids = sorted(q for q in qrels if q in stable and q in candidate)
        if not qids:
            raise ValueError("no golden query has a ranking from both versions")
        atoms = [rao_blackwell_atoms(stable[q], candidate[q], relevant[q], model, k) for q in qids]
        unclicked = np.array([a[a[:, 3] == 0, 0].sum() for a in atoms])
        three = np.array([interleave_probabilities(stable[q], candidate[q], relevant[q], model, k) for q in qids])
        padded = np.zeros((len(qids), max(len(a) for a in atoms), 4))
        for i, a in enumerate(atoms):
            padded[i, :len(a)] = a
        return cls(np.array([click_probability(stable[q][:k], relevant[q], model) for q in qids]),
                   np.array([click_probability(candidate[q][:k], relevant[q], model) for q in qids]),
                   np.column_stack([three[:, :2], three[:, 2] - unclicked, unclicked]), padded)

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


def _realised_tally(pair: Pair, rng: np.random.Generator, m: int) -> O.InterleaveTally:
    """m impressions credited by their realised teams (standard team-draft counting)."""
    cumulative = np.cumsum(pair.interleave, axis=1)
    q, u = rng.integers(len(cumulative), size=m), rng.random(m)
    outcome = (cumulative[q] < u[:, None]).sum(axis=1)  # 0 stable won, 1 candidate won, 2 tie, 3 no click
    counts = np.bincount(np.minimum(outcome, 3), minlength=4)
    return O.InterleaveTally.of_counts(int(counts[0]), int(counts[1]), int(counts[2]), int(counts[3]))


def _rao_blackwell_tally(pair: Pair, rng: np.random.Generator, m: int) -> O.InterleaveTally:
    """m impressions credited as the service does: `IL.win_probabilities` over the drafts giving each list."""
    cumulative = np.cumsum(pair.atoms[:, :, 0], axis=1)
    q, u = rng.integers(len(cumulative), size=m), rng.random(m)
    atom = np.minimum((cumulative[q] < u[:, None]).sum(axis=1), pair.atoms.shape[1] - 1)
    _, pc, ps, clicked = pair.atoms[q, atom].T
    pc, ps, on = pc[clicked > 0], ps[clicked > 0], clicked > 0
    v, w = pc - ps, pc + ps
    return O.InterleaveTally(queries=m, clicked=int(on.sum()), wins_candidate=float(pc.sum()),
                             wins_stable=float(ps.sum()), sum_vv=float(v @ v), sum_uu=float(w @ w),
                             sum_uv=float(v @ w))


def _merge(a: O.InterleaveTally, b: O.InterleaveTally) -> O.InterleaveTally:
    return O.InterleaveTally(a.queries + b.queries, a.clicked + b.clicked, a.wins_candidate + b.wins_candidate,
                             a.wins_stable + b.wins_stable, a.sum_vv + b.sum_vv, a.sum_uu + b.sum_uu,
                             a.sum_uv + b.sum_uv)


def interleave_runs(pair: Pair, looks: Sequence[int], *, seed: int, alpha: float = 0.05, min_queries: int = 10,
                    margin: float = 0.0, horizons: Sequence[float | None] = (None,),
                    rao_blackwell: bool = True) -> list[Outcome]:
    """One rollout that interleaves every query, judged at every look by the service's preference test
    (`interleave_decide`); one Outcome per mixture horizon (None: the test's default, 10 x minQueries).

    `rao_blackwell` False credits each impression by its realised teams (the
    textbook team-draft count) instead of `IL.win_probabilities`, to show
    what the averaging gains.
    """
    rng = np.random.default_rng(seed)
    draw = _rao_blackwell_tally if rao_blackwell else _realised_tally
    tally, n = O.InterleaveTally(), 0
    decided: dict[int, Outcome] = {}
    for look in looks:
        tally, n = _merge(tally, draw(pair, rng, look - n)), look
        for i, horizon in enumerate(horizons):
            if i not in decided:
                decision = O.interleave_decide(tally, min_queries, alpha, margin=margin, horizon=horizon).status
                if decision != O.INCONCLUSIVE:
                    decided[i] = Outcome(decision, n)
        if len(decided) == len(horizons):
            break
    return [decided.get(i, Outcome(O.INCONCLUSIVE, n)) for i in range(len(horizons))]


def interleave_run(pair: Pair, looks: Sequence[int], *, seed: int, alpha: float = 0.05, min_queries: int = 10,
                   margin: float = 0.0) -> Outcome:
    """One rollout that interleaves every query, judged by the service's preference test at every look."""
    return interleave_runs(pair, looks, seed=seed, alpha=alpha, min_queries=min_queries, margin=margin)[0]
