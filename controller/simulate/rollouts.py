"""In-process rollouts on ranked lists: many seeded A/B and interleaving runs per second.

The HTTP driver (controller.simulate.http) exercises the real service; this
module replays the same click model on precomputed rankings so statistical
properties (false-abort rate over hundreds of A/A rollouts, queries needed to
a decision) can be measured quickly. The decisions are the ones the service's
gates make: controller.core.online.decide and interleave_decide.

A run simulates queries one at a time and looks at the data every
``look_every`` queries, like an analysis step evaluated at every interval. It
records the first look at which the sequential test decided, and, for
contrast, the first look at which a naive fixed-sample test (a (1 - alpha)
normal interval computed as if that look were the only one, the way a fixed
threshold checked at every interval behaves) would have failed the candidate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

from controller.core import interleave as IL
from controller.core import online as O
from controller.core.routing import bucket
from controller.simulate.clicks import ClickModel, Interaction, simulate
from controller.simulate.population import Population, Users

Rankings = Mapping[str, Sequence[str]]
Qrels = Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class RunResult:
    decision: str  # sequential: "passed" | "failed" | "inconclusive" (undecided at max_queries)
    queries: int  # queries simulated when it decided (max_queries when undecided)
    looks: int  # looks taken until then
    naive_failed_at: int | None = None  # queries at the first look the naive test failed, if ever


class _Looks:
    """Look every `every` queries, and at least `growth` x the queries so far apart (0: evenly)."""

    def __init__(self, every: int, growth: float) -> None:
        self.every, self.growth, self.next = every, growth, every

    def __call__(self, n: int) -> bool:
        if n % self.every or n < self.next:
            return False
        self.next = n + max(self.every, int(self.growth * n))
        return True


def _value(metric: str, interaction: Interaction) -> float:
    if metric == "ctr":
        return float(bool(interaction.clicks))
    if metric == "clicksPerQuery":
        return float(len(interaction.clicks))
    if metric == "mrr":
        return 1.0 / min(interaction.positions) if interaction.clicks else 0.0
    raise ValueError(f"the in-process simulator measures ctr, clicksPerQuery or mrr, not {metric!r}")


def _relevant(qrels: Qrels) -> dict[str, frozenset[str]]:
    return {q: frozenset(d for d, g in docs.items() if g > 0) for q, docs in qrels.items()}


def _queries(stable: Rankings, candidate: Rankings, qrels: Qrels) -> list[str]:
    qids = sorted(q for q in qrels if q in stable and q in candidate)
    if not qids:
        raise ValueError("no golden query has a ranking from both versions")
    return qids


def naive_fails(stable: Sequence[float], candidate: Sequence[float], gate: O.OnlineGate, alpha: float) -> bool:
    """A fixed-sample (1 - alpha) normal interval of the delta, used as if this were the only look."""
    ns, nc = len(stable), len(candidate)
    if ns < 2 or nc < 2:
        return False
    ms, mc = sum(stable) / ns, sum(candidate) / nc
    vs = sum((x - ms) ** 2 for x in stable) / (ns - 1)
    vc = sum((x - mc) ** 2 for x in candidate) / (nc - 1)
    z = NormalDist().inv_cdf(1 - alpha / 2)
    half = z * math.sqrt(vs / ns + vc / nc)
    delta = mc - ms
    if gate.higher_is_better:
        return delta + half < gate.bound
    return delta - half > gate.bound


class _Senders:
    """Who sends each query: one anonymous user per query (`population` None: each query goes to the
    candidate with probability `weight`), or a population's users, each sticky to the arm their key's
    bucket gives, as the service routes them."""

    def __init__(self, population: Population | None, model: ClickModel, weight: float | None,
                 rng: random.Random):
        self.model, self.weight, self.rng = model, weight, rng
        self.users: Users | None = population.draw(rng) if population is not None else None
        self.to_candidate = [weight is not None and bucket(user.key) < weight * 100
                             for user in self.users.people] if self.users is not None else []

    def next(self) -> tuple[int | None, ClickModel, bool]:
        """(unit, click model, to the candidate?) of the next query; no arm (False) when `weight` is None."""
        if self.users is None:
            return None, self.model, self.weight is not None and self.rng.random() < self.weight
        i, user = self.users.pick(self.rng)
        return i, user.model, self.to_candidate[i]


def run_ab(stable: Rankings, candidate: Rankings, qrels: Qrels, *, gate: O.OnlineGate, seed: int,
           alpha: float = 0.05, model: ClickModel = ClickModel(), weight: float = 0.5, k: int = 10,
           look_every: int = 100, max_queries: int = 2000, horizon: float | None = None,
           until_naive: bool = False, growth: float = 0.0, population: Population | None = None,
           clustered: bool = True) -> RunResult:
    """An A/B split: each query goes to the candidate with probability `weight`, the gate is looked at
    every `look_every` queries (and, with `growth` > 0, no sooner than `growth` x the queries so far after
    the previous look). With `until_naive` the run goes on to max_queries to see whether the naive test
    would have failed at some look. With a `population`, its users send the queries (each with their own
    click model, sticky to one arm by key) and, if `clustered`, the gate groups samples by user as the
    service does by routing key; `clustered=False` treats every sample as independent, for contrast."""
    rng = random.Random(seed)
    relevant = _relevant(qrels)
    qids = _queries(stable, candidate, qrels)
    senders = _Senders(population, model, weight, rng)
    arms: dict[bool, list[float]] = {False: [], True: []}
    units: dict[bool, list[int | None]] = {False: [], True: []}
    decided: tuple[str, int, int] | None = None
    naive_at: int | None = None
    looks = 0
    due = _Looks(look_every, growth)
    for n in range(1, max_queries + 1):
        q = rng.choice(qids)
        unit, user_model, to_candidate = senders.next()
        ranking = (candidate if to_candidate else stable)[q][:k]
        arms[to_candidate].append(_value(gate.metric, simulate(ranking, relevant[q], rng, user_model)))
        units[to_candidate].append(unit)
        if not due(n):
            continue
        looks += 1
        if decided is None:
            by_unit = (units[False], units[True]) if population is not None and clustered else (None, None)
            result = O.decide(arms[False], arms[True], gate, alpha, horizon=horizon, units=by_unit)
            if result["decision"] != O.INCONCLUSIVE:
                decided = (result["decision"], n, looks)
        if naive_at is None and naive_fails(arms[False], arms[True], gate, alpha):
            naive_at = n
        if decided is not None and (naive_at is not None or not until_naive):
            break
    decision, queries, at_look = decided or (O.INCONCLUSIVE, max_queries, looks)
    return RunResult(decision, queries, at_look, naive_at)


def run_interleave(stable: Rankings, candidate: Rankings, qrels: Qrels, *, seed: int, alpha: float = 0.05,
                   model: ClickModel = ClickModel(), k: int = 10, min_queries: int = 10, look_every: int = 10,
                   max_queries: int = 2000, margin: float = 0.0, growth: float = 0.0,
                   population: Population | None = None, clustered: bool = True) -> RunResult:
    """Every query interleaved by team draft; the preference test is looked at every `look_every` queries.
    `population` and `clustered` as in `run_ab` (every user's queries are interleaved)."""
    rng = random.Random(seed)
    relevant = _relevant(qrels)
    qids = _queries(stable, candidate, qrels)
    senders = _Senders(population, model, None, rng)
    tally = O.InterleaveTally()
    looks = 0
    due = _Looks(look_every, growth)
    for n in range(1, max_queries + 1):
        q = rng.choice(qids)
        unit, user_model, _ = senders.next()
        a, b = stable[q][:k], candidate[q][:k]
        merged, _ = IL.team_draft(a, b, k, rng)
        clicked = simulate(merged, relevant[q], rng, user_model).positions
        shares = IL.win_probabilities(a, b, merged, clicked)
        assert shares is not None  # merged is a draft of a and b
        tally.add(*shares, clicked=bool(clicked), unit=unit if clustered else None)
        if not due(n):
            continue
        looks += 1
        v = O.interleave_decide(tally, min_queries, alpha, margin=margin)
        if v.status != O.INCONCLUSIVE:
            return RunResult(v.status, n, looks)
    return RunResult(O.INCONCLUSIVE, max_queries, looks)
