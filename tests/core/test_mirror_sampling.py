"""setMirror sampling (core/routing.mirrored): sticky per routing key and rollout, random without a key."""

from __future__ import annotations

import random

import pytest

from controller.core.routing import bucket, choose_version, mirror_salt, mirrored
from controller.core.types import Routing

KEYS = [f"user-{i}" for i in range(20000)]


def routing(mirror: float, candidate: str = "v2", weight: float = 0.0) -> Routing:
    return Routing(stable="v1", candidate=candidate, weight=weight, mirror=mirror)


@pytest.mark.parametrize("share", [5.0, 20.0, 50.0])
def test_share_of_keys_mirrored_is_the_setting(share):
    hits = sum(mirrored(routing(share), "v1", key=k, draw=0.0) for k in KEYS)
    # binomial standard deviation at n=20000 is at most 0.35 points: 1.5 points is > 4 sigma
    assert abs(hits / len(KEYS) * 100 - share) < 1.5


def test_a_key_is_mirrored_always_or_never_whatever_the_draw():
    rng = random.Random(7)
    for key in KEYS[:500]:
        answers = {mirrored(routing(30.0), "v1", key=key, draw=rng.uniform(0, 100)) for _ in range(20)}
        assert len(answers) == 1, key


def test_raising_the_share_keeps_the_keys_already_mirrored():
    at_10 = {k for k in KEYS if mirrored(routing(10.0), "v1", key=k, draw=0.0)}
    at_40 = {k for k in KEYS if mirrored(routing(40.0), "v1", key=k, draw=0.0)}
    assert at_10 and at_10 <= at_40


def test_another_rollout_draws_other_users():
    first = {k for k in KEYS if mirrored(routing(20.0, "v2"), "v1", key=k, draw=0.0)}
    second = {k for k in KEYS if mirrored(routing(20.0, "v3"), "v1", key=k, draw=0.0)}
    overlap = len(first & second) / len(first)
    assert 0.15 < overlap < 0.25  # independent draws: about 20% of the first set again, not all of it


def test_mirror_bucket_is_independent_of_the_weight_bucket():
    r = routing(50.0, weight=50.0)
    served_stable = [k for k in KEYS if choose_version(r, key=k, draw=0.0) == "v1"]
    share = sum(mirrored(r, "v1", key=k, draw=0.0) for k in served_stable) / len(served_stable)
    assert abs(share - 0.5) < 0.03  # not 0 or 1, as one shared bucket would give
    assert bucket(mirror_salt("v2", "user-1")) != bucket("user-1")


@pytest.mark.parametrize("draw, expect", [(9.99, True), (10.0, False), (99.0, False)])
def test_without_a_key_each_query_is_drawn(draw, expect):
    assert mirrored(routing(10.0), "v1", key=None, draw=draw) is expect


def test_queries_the_candidate_served_or_without_mirror_are_never_mirrored():
    assert not mirrored(routing(100.0), "v2", key="user-1", draw=0.0)
    assert not mirrored(routing(0.0), "v1", key="user-1", draw=0.0)
    assert not mirrored(Routing(stable="v1", mirror=100.0), "v1", key="user-1", draw=0.0)
