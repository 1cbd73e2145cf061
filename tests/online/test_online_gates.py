"""Online gate decisions: pass / fail / inconclusive, with numbers in every verdict."""

from __future__ import annotations

import random

import pytest

from controller.core.online import (FAILED, INCONCLUSIVE, PASSED, InterleaveTally, OnlineGate, combine, decide,
                                    interleave_decide, jaccard, known_metric, rbo, verdict)
from controller.errors import InvalidInput


def _bern(p: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [float(rng.random() < p) for _ in range(n)]


def _exp(mean: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [rng.expovariate(1 / mean) for _ in range(n)]


S50 = _bern(0.5, 4000, 1)


@pytest.mark.parametrize("gate,candidate,decision,reason", [
    (OnlineGate("ctr", max_drop=0.02), _bern(0.40, 4000, 2), FAILED, "intervalOnBadSide"),
    (OnlineGate("ctr", max_drop=0.02), _bern(0.60, 4000, 2), PASSED, "intervalOnGoodSide"),
    (OnlineGate("ctr", max_drop=0.02), _bern(0.50, 4000, 2), INCONCLUSIVE, "intervalStraddlesThreshold"),
    (OnlineGate("ctr", max_drop=0.02, min_samples=5000), _bern(0.10, 4000, 2), INCONCLUSIVE, "notEnoughSamples"),
    (OnlineGate("skipRate", max_increase=0.02), _bern(0.60, 4000, 2), FAILED, "intervalOnBadSide"),
    (OnlineGate("skipRate", max_increase=0.02), _bern(0.40, 4000, 2), PASSED, "intervalOnGoodSide"),
    (OnlineGate("ctr", min=0.45), _bern(0.55, 4000, 2), PASSED, "intervalOnGoodSide"),
    (OnlineGate("ctr", min=0.45), _bern(0.35, 4000, 2), FAILED, "intervalOnBadSide"),
    (OnlineGate("errorRate", max=0.01), [0.0] * 4000, PASSED, "intervalOnGoodSide"),
    (OnlineGate("errorRate", max=0.01), _bern(0.05, 4000, 3), FAILED, "intervalOnBadSide"),
])
def test_gate_table(gate, candidate, decision, reason):
    r = decide(S50, candidate, gate, 0.05)
    assert (r["decision"], r["reason"]) == (decision, reason)
    assert r["samples"] == {"stable": 4000, "candidate": len(candidate)}
    lo, hi = r["interval"]
    assert lo <= (r["delta"] if gate.relative else r["value"]) <= hi
    assert r["threshold"] == gate.threshold and r["kind"] == gate.kind and r["alpha"] == 0.05
    assert gate.metric in r["message"] and r["decision"] in r["message"]


def test_latency_quantile_gate_fails_a_slow_candidate_and_passes_a_fast_one():
    stable = _exp(40, 3000, 1)
    slow = decide(stable, _exp(80, 3000, 2), OnlineGate("latencyP99", max_increase=10), 0.05)
    fast = decide(stable, _exp(20, 3000, 2), OnlineGate("latencyP95", max_increase=10), 0.05)
    assert slow["decision"] == FAILED and slow["delta"] > 10
    assert fast["decision"] == PASSED


def test_minimum_samples_applies_to_both_arms_for_relative_gates_only():
    gate = OnlineGate("ctr", max_drop=0.0, min_samples=100)
    assert decide(S50[:50], _bern(0.0, 500, 1), gate)["reason"] == "notEnoughSamples"
    absolute = OnlineGate("ctr", max=0.9, min_samples=100)
    assert decide([], _bern(0.0, 500, 1), absolute)["decision"] == PASSED


def test_no_data_is_never_a_pass_and_timeout_policy_is_the_callers():
    gate = OnlineGate("ctr", max_drop=0.02)
    r = decide([], [], gate)
    assert r["decision"] == INCONCLUSIVE and r["value"] is None and r["interval"] == [None, None]
    straddle = _bern(0.5, 4000, 2)
    assert decide(S50, straddle, gate, on_timeout="passed")["decision"] == PASSED
    assert decide(S50, straddle, gate, on_timeout="failed")["reason"] == "timeout"
    assert decide(S50, _bern(0.3, 4000, 2), gate, on_timeout="passed")["decision"] == FAILED  # decided stays


@pytest.mark.parametrize("kwargs,field", [
    ({"metric": "nope", "max_drop": 0.1}, "metric"),
    ({"metric": "ctr"}, "gates"),
    ({"metric": "ctr", "max_drop": 0.1, "min": 0.2}, "gates"),
    ({"metric": "ctr", "max_drop": -0.1}, "maxDrop"),
    ({"metric": "ctr", "min": float("nan")}, "min"),
    ({"metric": "ctr", "min": 0.1, "min_samples": 0}, "minSamples"),
])
def test_bad_gates_are_refused_with_the_field(kwargs, field):
    with pytest.raises(InvalidInput) as err:
        OnlineGate(**kwargs)
    assert err.value.field == field


def test_metric_names():
    for m in ("ctr", "ctr@3", "mrr", "dwellMean", "latencyP99", "mirrorOverlap", "mirrorJaccard",
              "mirrorLatencyP99", "zeroResultRate", "complaintRate", "clicksPerQuery", "errorRate"):
        assert known_metric(m)
    assert not known_metric("ctr@0") and not known_metric("ndcg@10")


@pytest.mark.parametrize("ws,wc,ties,unclicked,minq,decision", [
    (10, 40, 50, 0, 100, PASSED),
    (40, 10, 50, 0, 100, FAILED),
    (25, 25, 50, 0, 100, INCONCLUSIVE),
    (0, 30, 0, 500, 100, INCONCLUSIVE),  # clear preference, but fewer clicked queries than minQueries
    (0, 0, 0, 0, 0, INCONCLUSIVE),
])
def test_interleave_table(ws, wc, ties, unclicked, minq, decision):
    v = interleave_decide(InterleaveTally.of_counts(ws, wc, ties, unclicked), minq, 0.05)
    assert v.status == decision
    d = v.to_json()["interleave"]
    assert d["wins"] == {"stable": ws, "candidate": wc} and d["ties"] == ties
    assert (d["clicked"], d["queries"]) == (ws + wc + ties, ws + wc + ties + unclicked)
    assert d["interval"][0] is None or d["interval"][0] <= d["interval"][1]


def test_queries_without_a_click_do_not_dilute_the_preference_test():
    with_clicks = interleave_decide(InterleaveTally.of_counts(40, 60, 0), 10, 0.05, horizon=100)
    diluted = interleave_decide(InterleaveTally.of_counts(40, 60, 0, unclicked=10_000), 10, 0.05, horizon=100)
    assert with_clicks.interleave["interval"] == diluted.interleave["interval"]


def test_the_tally_of_probabilities_equals_the_tally_of_counts_for_realised_outcomes():
    tally = InterleaveTally()
    for cw, sw, clicked in [(1, 0, True)] * 7 + [(0, 1, True)] * 3 + [(0, 0, True)] * 2 + [(0, 0, False)] * 5:
        tally.add(cw, sw, clicked)
    assert tally == InterleaveTally.of_counts(3, 7, 2, 5)
    xs = [1.0] * 7 + [-1.0] * 3 + [0.0] * 2
    s = tally.summary()
    assert s.n == 12 and s.mean == pytest.approx(sum(xs) / 12)
    # the variance carries half a pseudo-query at +1 and half at -1
    assert s.variance == pytest.approx((sum(x * x for x in xs) + 1) / 13 - (sum(xs) / 13) ** 2)


def test_the_margin_moves_the_bar_on_the_win_share():
    # win share 0.48: the margin 0.1 bar is 0.4, so z = v + 2 m u has a positive mean
    tally = InterleaveTally.of_counts(520, 480, 0)
    assert tally.summary(0.1).mean == pytest.approx((480 - 520 + 0.2 * 1000) / 1000)
    assert interleave_decide(InterleaveTally.of_counts(480, 520, 0), 100, 0.05).status == INCONCLUSIVE
    assert interleave_decide(tally, 100, 0.05, margin=0.1).status == PASSED
    with pytest.raises(InvalidInput):
        interleave_decide(tally, 1, 0.05, margin=0.6)
    with pytest.raises(InvalidInput):
        InterleaveTally.of_counts(-1, 0, 0)


def test_interleave_false_preference_rate_under_no_difference():
    """Equal rankers: 1000 streams of 600 decisive queries, looked at every 10: wrong verdicts <= alpha."""
    rng = random.Random(11)
    wrong = 0
    for _ in range(1000):
        tally = InterleaveTally()
        for n in range(1, 601):
            win = rng.random() < 0.5
            tally.add(float(win), float(not win))
            if n % 10 == 0 and interleave_decide(tally, 10, 0.05).status != INCONCLUSIVE:
                wrong += 1
                break
    assert wrong / 1000 <= 0.05


def test_combine_and_verdict_json():
    assert combine([PASSED, FAILED]) == FAILED
    assert combine([PASSED, PASSED]) == PASSED
    assert combine([PASSED, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([]) == INCONCLUSIVE
    g = decide(S50, _bern(0.3, 4000, 2), OnlineGate("ctr", max_drop=0.02))
    j = verdict([g], 0.05, window={"since": 1.0, "until": 2.0}).to_json()
    assert j["status"] == FAILED and j["gates"][0]["metric"] == "ctr" and j["window"]["until"] == 2.0
    assert "ctr" in j["message"]


def test_overlap_measures():
    assert rbo(list("abcde"), list("abcde")) == pytest.approx(1.0)
    assert rbo(list("abc"), list("xyz")) == 0.0
    assert rbo(list("abcd"), list("abdc")) > rbo(list("abcd"), list("bacd")) > rbo(list("abcd"), list("dcba"))
    assert jaccard("abc", "bcd") == 0.5 and jaccard([], []) == 1.0
