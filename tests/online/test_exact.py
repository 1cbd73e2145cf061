"""The exact-probability rollouts (controller.simulate.exact) match click-by-click simulation and the service's
decisions, so the sensitivity table of bench/bench_online.py measures what the service would decide."""

from __future__ import annotations

import random

import numpy as np
import pytest

from controller.core import interleave as IL
from controller.core import online as O
from controller.core import sequential as S
from controller.simulate import exact as X
from controller.simulate.clicks import CLICK_MODELS, ClickModel, simulate
from controller.simulate.rankings import both_orders, ndcg_at, scifact_rankings
from controller.simulate.rollouts import _Looks

STABLE = [f"d{i}" for i in range(10)]
CANDIDATE = ["d5", "x1", "d0", "x2", "d7", "d1", "x3", "d2", "x4", "d9"]
RELEVANT = frozenset({"d0", "d1", "d5", "x2"})


@pytest.mark.parametrize("name", list(CLICK_MODELS))
def test_click_and_interleave_probabilities_match_click_by_click_simulation(name):
    model, rng, n = CLICK_MODELS[name], random.Random(7), 20_000
    clicked = sum(bool(simulate(CANDIDATE, RELEVANT, rng, model).clicks) for _ in range(n)) / n
    assert clicked == pytest.approx(X.click_probability(CANDIDATE, RELEVANT, model), abs=0.012)
    counts = {IL.STABLE: 0, IL.CANDIDATE: 0, "tie": 0}
    for _ in range(n):
        merged, teams = IL.team_draft(STABLE, CANDIDATE, 10, rng)
        counts[IL.outcome(IL.credit(teams, simulate(merged, RELEVANT, rng, model).positions))] += 1
    exact = X.interleave_probabilities(STABLE, CANDIDATE, RELEVANT, model)
    assert sum(exact) == pytest.approx(1.0)
    assert [counts[IL.STABLE] / n, counts[IL.CANDIDATE] / n, counts["tie"] / n] == pytest.approx(exact, abs=0.012)


def test_identical_rankings_are_an_even_match():
    s, c, t = X.interleave_probabilities(STABLE, STABLE, RELEVANT, ClickModel())
    assert s == pytest.approx(c) and t > 0


def test_look_points_are_the_click_by_click_schedule():
    due = _Looks(5, 0.02)
    assert X.look_points(5, 0.02, 50_000) == [n for n in range(1, 50_001) if due(n)]


def test_decide_difference_equals_decide_on_the_samples():
    rng = random.Random(3)
    gate = O.OnlineGate("ctr", max_drop=0.0, min_samples=10)
    for n in (5, 40, 400, 4000):
        stable = [float(rng.random() < 0.5) for _ in range(n)]
        candidate = [float(rng.random() < 0.45) for _ in range(n)]
        summaries = S.binary_summary(int(sum(stable)), n), S.binary_summary(int(sum(candidate)), n)
        assert O.decide_difference(*summaries, gate) == O.decide(stable, candidate, gate)["decision"]
    with pytest.raises(O.InvalidInput):
        O.decide_difference(*summaries, O.OnlineGate("ctr", min=0.1))


@pytest.mark.parametrize("name", list(CLICK_MODELS))
def test_rao_blackwell_atoms_match_click_by_click_simulation_and_keep_the_preference(name):
    model, rng, n = CLICK_MODELS[name], random.Random(3), 20_000
    atoms = X.rao_blackwell_atoms(STABLE, CANDIDATE, RELEVANT, model)
    assert atoms[:, 0].sum() == pytest.approx(1.0)
    sums = np.zeros(4)
    for _ in range(n):
        merged, _ = IL.team_draft(STABLE, CANDIDATE, 10, rng)
        clicked = simulate(merged, RELEVANT, rng, model).positions
        pc, ps = IL.win_probabilities(STABLE, CANDIDATE, merged, clicked)
        sums += [pc, ps, (pc - ps) ** 2, bool(clicked)]
    p = atoms[:, 0]
    exact = [p @ atoms[:, 1], p @ atoms[:, 2], p @ (atoms[:, 1] - atoms[:, 2]) ** 2, p @ atoms[:, 3]]
    assert list(sums / n) == pytest.approx(exact, abs=0.012)
    # averaging over the drafts keeps the team-draft preference (its mean) exactly
    s_wins, c_wins, _ = X.interleave_probabilities(STABLE, CANDIDATE, RELEVANT, model)
    assert exact[:2] == pytest.approx([c_wins, s_wins])


@pytest.mark.scifact
def test_a_small_gap_is_failed_by_both_designs_and_interleaving_needs_fewer_queries(scifact):
    stable, golden = scifact_rankings(scifact)
    candidate, _ = scifact_rankings(scifact, doc_noise=0.05)
    assert 0.05 < ndcg_at(golden, stable) - ndcg_at(golden, candidate) < 0.12
    pair = X.Pair.build(stable, candidate, golden.qrels, CLICK_MODELS["perfect"])
    assert pair.ctr_gap < 0 and pair.win_share < 0.5
    looks = X.look_points(5, 0.02, 100_000)
    gate = O.OnlineGate("ctr", max_drop=0.0, min_samples=10)
    ab = [X.ab_runs(pair, gate, looks, seed=s)[0] for s in range(10)]
    il = [X.interleave_run(pair, looks, seed=s) for s in range(10)]
    assert all(o.decision == O.FAILED for o in ab + il)
    assert sorted(o.queries for o in il)[5] < sorted(o.queries for o in ab)[5]


@pytest.mark.slow
@pytest.mark.scifact
def test_aa_false_fails_stay_under_alpha_at_every_horizon_the_bench_compares(scifact):
    """The bench's "best horizon" columns must not buy either design an invalid test."""
    stable, golden = scifact_rankings(scifact)
    pair = X.Pair.build(stable, stable, golden.qrels, CLICK_MODELS["informational"])
    # identical lists leave the averaged preference exactly 0: interleaving's A/A needs two equal rankers
    x, y = (scifact_rankings(scifact, doc_noise=0.03, seed=seed)[0] for seed in (0, 1))
    equal = X.Pair.build(*both_orders(x, y, golden.qrels), CLICK_MODELS["informational"])
    looks = X.look_points(5, 0.02, 10_000)
    gate = O.OnlineGate("ctr", max_drop=0.0, min_samples=10)
    horizons = (None, 1e3, 1e4)
    ab = [X.ab_runs(pair, gate, looks, seed=s, horizons=horizons) for s in range(100)]
    il = [X.interleave_runs(equal, looks, seed=s, horizons=horizons) for s in range(100)]
    realised = [X.interleave_runs(equal, looks, seed=s, horizons=horizons, rao_blackwell=False) for s in range(100)]
    for h in range(len(horizons)):
        assert sum(run[h].decision == O.FAILED for run in ab) / 100 <= 0.05
        for runs in (il, realised):  # neither ranker is better: any verdict is wrong
            assert sum(run[h].decision != O.INCONCLUSIVE for run in runs) / 100 <= 0.05
