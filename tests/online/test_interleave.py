"""Team-draft interleaving: fairness per prefix, no duplicates, credit by team."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from controller.core.interleave import CANDIDATE, STABLE, credit, outcome, team_draft


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
