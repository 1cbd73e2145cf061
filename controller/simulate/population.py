"""Simulated users who differ from one another: each has a click model and a share of the traffic.

One click model for everybody (the default elsewhere in this package) makes
every query an independent draw, whichever user sent it. Real users differ:
some click on almost anything, some only on the answer they came for, and a
few send a large share of the queries. Because routing is sticky per routing
key, all of a heavy user's queries land in the same arm, and their habits
move that arm's mean. An online gate that counts such queries as independent
samples aborts an A/A rollout more often than its alpha (measured in
docs/rollouts.md, "Users who send many queries"); this population is how
the tests and the bench show it, and show that grouping samples by user
(controller.core.sequential.clustered_variance) fixes it.

A population draws its users afresh for each seeded run: a random key (so
the arm a user lands in is random across runs, as it is across rollouts) and
a click model picked uniformly from `models`. User i (0-based, in draw
order) sends a share of the queries proportional to 1 / (i + 1) ** activity:
0 is uniform, 1 is Zipf's law (the heaviest of 100 users sends 19% of the
queries).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from controller.simulate.clicks import CLICK_MODELS, ClickModel


@dataclass(frozen=True)
class SimUser:
    key: str  # the routing key sent with every query
    model: ClickModel


@dataclass(frozen=True)
class Population:
    users: int = 1000
    models: tuple[ClickModel, ...] = (ClickModel(),)
    activity: float = 0.0

    def __post_init__(self) -> None:
        if self.users < 1:
            raise ValueError(f"Population.users must be at least 1, got {self.users!r}")
        if not self.models:
            raise ValueError("Population.models needs at least one click model")
        if not (math.isfinite(self.activity) and self.activity >= 0):
            raise ValueError(f"Population.activity must be a number >= 0, got {self.activity!r}")

    def draw(self, rng: random.Random) -> Users:
        """This run's users: fresh keys, each with a click model picked from `models`."""
        run = f"{rng.getrandbits(48):012x}"
        people = [SimUser(f"sim-{run}-{i}", rng.choice(self.models)) for i in range(self.users)]
        shares = [1.0 / (i + 1) ** self.activity for i in range(self.users)]
        return Users(people, list(itertools.accumulate(shares)))


@dataclass(frozen=True)
class Users:
    people: Sequence[SimUser]
    cumulative: Sequence[float]  # running sums of the users' traffic shares

    def pick(self, rng: random.Random) -> tuple[int, SimUser]:
        """The user who sends the next query, by traffic share."""
        i = min(bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1]), len(self.people) - 1)
        return i, self.people[i]


#: The default model and Hofmann et al.'s four, one per user at random: users who differ in how much
#: they click and when they stop.
MIXED_MODELS = (ClickModel(), *CLICK_MODELS.values())
