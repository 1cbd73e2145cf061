"""Team-draft interleaving (Radlinski, Kurup, Joachims, CIKM 2008): pure.

Two rankers are compared inside one result list. Like captains picking
players, the team that has contributed fewer documents so far picks next (a
fair coin breaks ties); it contributes its highest-ranked document not yet in
the merged list. A click is credited to the team that contributed the clicked
document, and the query goes to the team with more credited clicks.

Because the coin is flipped anew at every tie, neither ranker is favoured by
position: in every prefix of the merged list the two teams' sizes differ by at
most one (while both lists still have unused documents).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Literal

STABLE: Literal["stable"] = "stable"
CANDIDATE: Literal["candidate"] = "candidate"
TEAMS = (STABLE, CANDIDATE)


def _next_unused(ranking: Sequence[str], start: int, used: set[str]) -> int:
    """Index of the first id at or after `start` not in `used`, or len(ranking)."""
    position = start
    while position < len(ranking) and ranking[position] in used:
        position += 1
    return position


def team_draft(
    a: Sequence[str], b: Sequence[str], k: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """Merge stable ranking `a` and candidate ranking `b` into at most `k` ids.

    Returns the merged ids and, per position, the team ("stable" for `a`,
    "candidate" for `b`) that contributed it. No id appears twice. When one
    list runs out, the other keeps filling the list so the user still sees `k`
    results; those positions are credited to the team that filled them (the
    paper stops there; a shorter page would be worse for the user, and with
    equally long lists it never happens before `k`).
    """
    merged: list[str] = []
    teams: list[str] = []
    used: set[str] = set()
    pos_a = pos_b = 0
    size_a = size_b = 0
    while len(merged) < k:
        pos_a = _next_unused(a, pos_a, used)
        pos_b = _next_unused(b, pos_b, used)
        a_left, b_left = pos_a < len(a), pos_b < len(b)
        if not a_left and not b_left:
            break
        if a_left and b_left:
            pick_a = size_a < size_b or (size_a == size_b and rng.random() < 0.5)
        else:
            pick_a = a_left
        if pick_a:
            doc, pos_a, size_a = a[pos_a], pos_a + 1, size_a + 1
            teams.append(STABLE)
        else:
            doc, pos_b, size_b = b[pos_b], pos_b + 1, size_b + 1
            teams.append(CANDIDATE)
        merged.append(doc)
        used.add(doc)
    return merged, teams


def credit(teams: Sequence[str], clicked_positions: Iterable[int]) -> tuple[int, int]:
    """Clicks credited to (stable, candidate); positions are 1-based.

    A position clicked twice counts once (a reload is not a second vote);
    positions outside the list are ignored because they cannot name a team.
    """
    stable = candidate = 0
    for position in set(clicked_positions):
        if not 1 <= position <= len(teams):
            continue
        team = teams[position - 1]
        if team == STABLE:
            stable += 1
        elif team == CANDIDATE:
            candidate += 1
    return stable, candidate


def outcome(credited: tuple[int, int]) -> str:
    """The query's winner: "stable", "candidate" or "tie" (no clicks is a tie)."""
    stable, candidate = credited
    if stable > candidate:
        return STABLE
    if candidate > stable:
        return CANDIDATE
    return "tie"


def win_probabilities(stable: Sequence[str], candidate: Sequence[str], merged: Sequence[str],
                      clicked_positions: Iterable[int]) -> tuple[float, float] | None:
    """(P(candidate wins), P(stable wins)) of one impression given the list shown and its clicks.

    The draft's coins are not what the user reacts to: the user sees `merged`,
    and when both rankers want the same document at a coin toss, either team
    could have contributed it and the list looks the same. The realised team
    of such a position is a coin flip that adds noise and no information. This
    averages the outcome over every coin sequence of the draft that yields the
    same list (each equally likely a priori): the conditional expectation of
    the team-draft outcome given what was observed. Its mean is the
    team-draft preference itself, its variance is never larger (Rao-Blackwell).

    A forward pass over the list with states (team-size difference, credited
    click difference); which document a team picks next depends only on the
    list so far, so the states stay few. None when no coin sequence yields
    `merged` (the lists do not belong to this impression).
    """
    clicked = set(clicked_positions)
    used: set[str] = set()
    pos_a = pos_b = 0
    states: dict[tuple[int, int], float] = {(0, 0): 1.0}
    for index, doc in enumerate(merged):
        pos_a = _next_unused(stable, pos_a, used)
        pos_b = _next_unused(candidate, pos_b, used)
        a_left, b_left = pos_a < len(stable), pos_b < len(candidate)
        a_fits = a_left and stable[pos_a] == doc
        b_fits = b_left and candidate[pos_b] == doc
        vote = 1 if index + 1 in clicked else 0
        nxt: dict[tuple[int, int], float] = {}
        for (size_diff, credit_diff), weight in states.items():
            if a_left and b_left:
                share_a = 0.5 if size_diff == 0 else float(size_diff < 0)
            else:
                share_a = float(a_left)
            if a_fits and share_a:
                key = (size_diff + 1, credit_diff - vote)
                nxt[key] = nxt.get(key, 0.0) + weight * share_a
            if b_fits and share_a < 1.0:
                key = (size_diff - 1, credit_diff + vote)
                nxt[key] = nxt.get(key, 0.0) + weight * (1.0 - share_a)
        if not nxt:
            return None
        states = nxt
        used.add(doc)
    total = sum(states.values())
    candidate_wins = sum(w for (_, c), w in states.items() if c > 0) / total
    stable_wins = sum(w for (_, c), w in states.items() if c < 0) / total
    return candidate_wins, stable_wins
