"""Pure gate verdicts, status phases and sticky routing."""

from __future__ import annotations

import pytest

from controller.core.gates import Context, GateSpec, evaluate_gates
from controller.core.routing import bucket, choose_version
from controller.core.types import Routing

CTX = Context("3f2a9c00", 300, 0.95)


@pytest.mark.parametrize("gate,new,old,passed,kinds", [
    (GateSpec("ndcg@10", min=0.6), 0.583, None, [False], ["min"]),
    (GateSpec("ndcg@10", min=0.6), 0.61, None, [True], ["min"]),
    (GateSpec("ndcg@10", max_drop=0.01), 0.62, 0.64, [False], ["maxDrop"]),
    (GateSpec("ndcg@10", max_drop=0.02), 0.62, 0.64, [True], ["maxDrop"]),
    (GateSpec("ndcg@10", max_drop=0.02), 0.62, None, [], []),  # first version: absolute gates only
    (GateSpec("ndcg@10", min=0.5, max_drop=0.0), 0.7, 0.6, [True, True], ["min", "maxDrop"]),
])
def test_gate_table(gate, new, old, passed, kinds):
    results = evaluate_gates([gate], {"ndcg@10": new}, {"ndcg@10": old} if old is not None else None, CTX)
    assert [r.passed for r in results] == passed
    assert [r.kind for r in results] == kinds


def test_message_carries_value_threshold_and_golden_set():
    [r] = evaluate_gates([GateSpec("ndcg@10", min=0.6)], {"ndcg@10": 0.583}, None, CTX,
                         {"ndcg@10": (0.011, 0.034)})
    assert r.message == "ndcg@10 0.583 < min 0.600 (golden 3f2a9c, 300 queries, 95% CI of drop [0.011, 0.034])"
    assert (r.value, r.threshold) == (0.583, 0.6)


def test_non_inferiority_uses_the_interval():
    ctx = Context("abc", 100, 0.95, non_inferiority=True)
    # point drop 0.005 is within 0.01, but the worst plausible drop 0.03 is not
    [r] = evaluate_gates([GateSpec("ndcg@10", max_drop=0.01)], {"ndcg@10": 0.635}, {"ndcg@10": 0.64}, ctx,
                         {"ndcg@10": (-0.02, 0.03)})
    assert not r.passed and "upper bound of drop 0.030 > maxDrop 0.010" in r.message


def test_routing_without_candidate_goes_to_stable():
    assert choose_version(Routing("v1"), key="u", draw=0.0) == "v1"
    assert choose_version(Routing("v1", "v2", 0.0), key=None, draw=0.0) == "v1"


def test_routing_share_follows_the_weight():
    routing = Routing("v1", "v2", 25.0)
    served = [choose_version(routing, key=f"user-{i}", draw=0) for i in range(4000)]
    share = served.count("v2") / len(served)
    assert 0.22 < share < 0.28


def test_routing_is_sticky_and_monotonic_in_weight():
    # a key on the candidate at 10% stays on it at 50%: raising the weight never flips users back
    keys = [f"k{i}" for i in range(500)]
    at10 = {k for k in keys if choose_version(Routing("a", "b", 10), key=k, draw=0) == "b"}
    at50 = {k for k in keys if choose_version(Routing("a", "b", 50), key=k, draw=0) == "b"}
    assert at10 <= at50 and 0 <= bucket("x") < 100


def test_bucket_is_the_documented_sha256_contract() -> None:
    """docs/serving.md's formula, with hashlib's SHA-256: an ingress or another router reproduces it
    (routing.bucket uses CPython's own SHA-256 module where it can, which must give the same bits)."""
    import hashlib

    for key in ["", "user-1", "ключ", "a" * 1000, "x\x00y"]:
        expected = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64 * 100
        assert bucket(key) == expected
