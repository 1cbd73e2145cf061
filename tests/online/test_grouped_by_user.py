"""Samples grouped by user: a heavy user's queries vary together, and the gates' variance says so."""

from __future__ import annotations

import math
import random

import pytest

from controller.core import online as O
from controller.core import sequential as S
from controller.engine import online as EO


def _leave_one_unit_out(xs: list[float], units: list) -> float:
    """The jackknife by its definition: N x (K - 1)/K x sum over units of (mean without it - mean)^2."""
    labels = [u if u is not None else ("own", i) for i, u in enumerate(units)]
    mean = sum(xs) / len(xs)
    groups = sorted(set(labels), key=repr)
    total = 0.0
    for g in groups:
        rest = [x for x, label in zip(xs, labels) if label != g]
        total += (sum(rest) / len(rest) - mean) ** 2
    k = len(groups)
    return len(xs) * (k - 1) / k * total


def test_clustered_variance_is_the_leave_one_user_out_jackknife():
    rng = random.Random(3)
    xs = [rng.gauss(0, 1) for _ in range(60)]
    units = [rng.choice(["a", "b", "c", "d", None]) for _ in xs]
    mean = sum(xs) / len(xs)
    assert S.clustered_variance(xs, units, mean) == pytest.approx(_leave_one_unit_out(xs, units), rel=1e-9)


def test_one_sample_per_user_is_the_sample_variance_and_one_user_is_unbounded():
    xs = [0.3, 1.2, -0.7, 2.5, 0.1]
    mean = sum(xs) / len(xs)
    sample_variance = sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)
    assert S.clustered_variance(xs, [None] * 5, mean) == pytest.approx(sample_variance, rel=1e-12)
    assert S.clustered_variance(xs, list("abcde"), mean) == pytest.approx(sample_variance, rel=1e-12)
    assert S.clustered_variance(xs, ["u"] * 5, mean) == math.inf


def test_a_user_repeating_their_habit_widens_the_interval_by_the_design_effect():
    """Each of 40 users clicks always or never, 25 queries each: 40 independent facts, not 1000."""
    users = [i % 2 for i in range(40)]
    xs = [float(users[i]) for i in range(40) for _ in range(25)]
    units = [i for i in range(40) for _ in range(25)]
    plain = S.summarize(xs)
    grouped = S.summarize(xs, units)
    assert grouped.mean == plain.mean == 0.5
    assert grouped.variance / plain.variance == pytest.approx(25 * 40 / 39, rel=0.01)
    # users who behave like everybody else cost nothing: the grouped variance is never below the plain one
    mixed = S.summarize([float(i % 2) for i in range(1000)], [i // 25 for i in range(1000)])
    assert mixed.variance == pytest.approx(plain.variance)


def test_the_gate_reports_users_and_decides_on_the_grouped_interval():
    gate = O.OnlineGate("ctr", max_drop=0.0, min_samples=100)
    stable = [float(i % 2) for i in range(1000)]
    # the candidate's clicks come from 8 users who click everything and 12 who click nothing:
    # independent samples would call 0.4 against 0.5 a drop, 20 users cannot
    candidate = [1.0] * 400 + [0.0] * 600
    cand_units = [f"u{i // 50}" for i in range(1000)]
    plain = O.decide(stable, candidate, gate)
    grouped = O.decide(stable, candidate, gate, units=(None, cand_units))
    assert plain["decision"] == O.FAILED and "units" not in plain
    assert grouped["decision"] == O.INCONCLUSIVE
    assert grouped["units"] == {"stable": 1000, "candidate": 20}
    assert "from 20/1000 users" in grouped["message"]
    lo, hi = grouped["interval"]
    assert lo < plain["interval"][0] and hi > plain["interval"][1]


def test_the_interleaving_tally_by_user_equals_the_grouped_variance_of_its_z_values():
    rng = random.Random(11)
    tally = O.InterleaveTally()
    zs, units = {0.0: [], 0.1: []}, []
    for _ in range(400):
        unit = rng.choice(["a", "b", "c", "d", "e", None, None])
        c = 1.0 if unit in ("a", "b") and rng.random() < 0.8 else rng.choice([0.0, 0.25, 0.5, 1.0])
        s = rng.choice([0.0, 1.0 - c, 0.5 * (1 - c)])
        clicked = rng.random() < 0.7
        tally.add(c, s, clicked=clicked, unit=unit)
        if clicked:
            units.append(unit)
            for margin in zs:
                zs[margin].append(c - s + 2 * margin * (c + s))
    for margin, z in zs.items():
        expected = S.clustered_variance(z, units, sum(z) / len(z))
        summary = tally.summary(margin)
        assert summary.mean == pytest.approx(sum(z) / len(z), rel=1e-12)
        ungrouped = O.InterleaveTally(clicked=tally.clicked, wins_candidate=tally.wins_candidate,
                                      wins_stable=tally.wins_stable, sum_vv=tally.sum_vv, sum_uu=tally.sum_uu,
                                      sum_uv=tally.sum_uv).summary(margin)
        assert expected > ungrouped.variance  # users a and b prefer the candidate far more than the rest
        assert summary.variance == pytest.approx(expected, rel=1e-9)
    verdict = O.interleave_decide(tally, 10)
    assert verdict.interleave["units"] == len({"a", "b", "c", "d", "e"}) + units.count(None)
    assert f"clicked by {verdict.interleave['units']} users of 400 queries" in verdict.interleave["message"]


def test_the_event_log_groups_samples_by_the_impressions_unit():
    recs = []
    for i in range(6):
        unit = None if i == 5 else f"k{i % 2}"
        recs.append({"type": "impression", "ts": 1, "requestId": f"r{i}", "version": "v1", "ids": ["x"],
                     "tookMs": 5, **({"unit": unit} if unit else {})})
        recs.append({"type": "dwell", "ts": 2, "requestId": f"r{i}", "docId": "x", "dwellMs": 100.0 * i})
    recs.append({"type": "error", "ts": 2, "version": "v1"})
    # a unit that is not a string (a hand-edited log) is no unit, not a crash of the analysis
    recs.append({"type": "impression", "ts": 1, "requestId": "odd", "version": "v2", "ids": ["x"], "unit": ["k0"]})
    w = EO.collect(recs)
    assert EO.arm_samples_and_units(w, "v2", "ctr") == ([0.0], [None])
    assert EO.arm_samples_and_units(w, "v1", "ctr")[1] == ["k0", "k1", "k0", "k1", "k0", None]
    assert EO.arm_samples_and_units(w, "v1", "dwellMean") == ([0.0, 100.0, 200.0, 300.0, 400.0, 500.0],
                                                              ["k0", "k1", "k0", "k1", "k0", None])
    assert EO.arm_samples_and_units(w, "v1", "errorRate")[1] == ["k0", "k1", "k0", "k1", "k0", None, None]
    # v0: no key at all
    assert EO.gate_samples(w, "v0", "v1", "ctr")[2] == (None, ["k0", "k1", "k0", "k1", "k0", None])
    assert EO.gate_samples(w, "v0", "v1", "mirrorOverlap")[2] == (None, None)
