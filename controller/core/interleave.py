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
