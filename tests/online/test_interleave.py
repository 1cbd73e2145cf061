"""Team-draft interleaving: fairness per prefix, no duplicates, credit by team."""

from __future__ import annotations

import itertools
import random
from collections import Counter, defaultdict

import pytest

from controller.core.interleave import CANDIDATE, STABLE, credit, outcome, team_draft, win_probabilities


def _rankings(rng: random.Random, pool: int, k: int) -> tuple[list[str], list[str]]:
    docs = [f"d{i}" for i in range(pool)]
    return rng.sample(docs, k), rng.sample(docs, k)


@pytest.mark.parametrize("seed", range(200))
def test_every_prefix_is_fair_and_free_of_duplicates(seed):
    rng = random.Random(seed)
    a, b = _rankings(rng, pool=rng.choice([10, 15, 40]), k=10)
    merged, teams = team_draft(a, b, 10, rng)
    assert len(merged) == len(set(merged)) == len(teams) == 10
    for n in range(1, len(teams) + 1):
        counts = Counter(teams[:n])
        assert abs(counts[STABLE] - counts[CANDIDATE]) <= 1, (n, teams)
    for doc, team in zip(merged, teams):
        assert doc in (a if team == STABLE else b)


def test_each_team_contributes_its_best_unused_document():
    merged, teams = team_draft(["a", "b", "c"], ["b", "x", "a"], 3, random.Random(1))
    for i, (doc, team) in enumerate(zip(merged, teams)):
        ranking = ["a", "b", "c"] if team == STABLE else ["b", "x", "a"]
        assert doc == next(d for d in ranking if d not in merged[:i])


def test_identical_rankings_give_the_ranking_back():
    ranking = [f"d{i}" for i in range(10)]
    merged, teams = team_draft(ranking, ranking, 10, random.Random(7))
    assert merged == ranking
    assert set(teams) == {STABLE, CANDIDATE}


def test_first_pick_is_a_fair_coin():
    rng = random.Random(3)
    first = Counter(team_draft(["a"], ["b"], 1, rng)[1][0] for _ in range(4000))
    assert abs(first[STABLE] - 2000) < 200  # ~6 sigma


def test_short_list_is_filled_by_the_other_and_k_caps_the_length():
    merged, teams = team_draft(["a"], ["b", "c", "d"], 10, random.Random(0))
    assert sorted(merged) == ["a", "b", "c", "d"]
    assert teams.count(STABLE) == 1
    assert team_draft(["a", "b"], ["c", "d"], 0, random.Random(0)) == ([], [])
    assert team_draft([], [], 5, random.Random(0)) == ([], [])


def test_duplicates_inside_one_list_are_skipped():
    merged, _ = team_draft(["a", "a", "b"], ["a", "b", "c"], 5, random.Random(0))
    assert merged == sorted(set(merged), key=merged.index) and set(merged) == {"a", "b", "c"}


@pytest.mark.parametrize("teams,clicks,expected,winner", [
    ([STABLE, CANDIDATE, STABLE], [1, 3], (2, 0), STABLE),
    ([STABLE, CANDIDATE, STABLE], [2], (0, 1), CANDIDATE),
    ([STABLE, CANDIDATE], [1, 2], (1, 1), "tie"),
    ([STABLE, CANDIDATE], [], (0, 0), "tie"),
    ([STABLE, CANDIDATE], [2, 2, 2], (0, 1), CANDIDATE),  # a repeated click is one vote
    ([STABLE, CANDIDATE], [0, 3, -1], (0, 0), "tie"),  # positions are 1-based; out of range ignored
])
def test_credit_table(teams, clicks, expected, winner):
    assert credit(teams, clicks) == expected
    assert outcome(credit(teams, clicks)) == winner


class _Coins:
    """Replays fixed coin flips in team_draft (True: stable picks first)."""

    def __init__(self, flips):
        self._flips = iter(flips)

    def random(self):
        return 0.0 if next(self._flips) else 0.99


def _brute_force(a, b, k, clicks):
    """Outcome shares per merged list over every coin sequence (each equally likely)."""
    by_list = defaultdict(list)
    for flips in itertools.product((True, False), repeat=k):
        coins = _Coins(flips)
        merged, teams = team_draft(a, b, k, coins)
        by_list[tuple(merged)].append(outcome(credit(teams, clicks)))
    return {m: (wins.count(CANDIDATE) / len(wins), wins.count(STABLE) / len(wins)) for m, wins in by_list.items()}


@pytest.mark.parametrize("seed", range(60))
def test_win_probabilities_average_the_outcome_over_the_drafts_that_give_the_same_list(seed):
    rng = random.Random(seed)
    k = rng.randint(1, 6)
    pool = [f"d{i}" for i in range(rng.randint(k, 2 * k + 1))]
    a = rng.sample(pool, rng.randint(1, k))
    b = a[:] if seed % 5 == 0 else rng.sample(pool, rng.randint(1, k))
    clicks = sorted(rng.sample(range(1, k + 1), rng.randint(0, k)))
    for merged, expected in _brute_force(a, b, k, clicks).items():
        got = win_probabilities(a, b, list(merged), clicks)
        assert got == pytest.approx(expected), (a, b, merged, clicks)


def test_documents_both_rankers_put_first_carry_no_preference():
    # stable-x then candidate-y, or candidate-x then stable-y: the same list, so a click on x is worth nothing
    a, b, merged = ["x", "y", "s"], ["x", "y", "c"], ["x", "y", "c"]
    assert win_probabilities(a, b, merged, [1]) == pytest.approx((0.5, 0.5))
    assert win_probabilities(a, b, merged, [1, 3]) == pytest.approx((0.5, 0.0))
    assert win_probabilities(a, b, merged, [1, 2]) == pytest.approx((0.0, 0.0))
    # only stable-x then candidate-c gives [x, c]: the realised teams are the only ones
    assert win_probabilities(["x", "s"], ["x", "c"], ["x", "c"], [1]) == pytest.approx((0.0, 1.0))


def test_a_list_no_draft_can_produce_has_no_probabilities():
    assert win_probabilities(["a", "b"], ["c", "d"], ["b", "a"], [1]) is None
