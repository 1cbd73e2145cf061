"""Table-driven tests of the pure status function: phase, reason, and conditions that agree with it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.core import reasons as R
from controller.core.status import compute_status, summarize_cycle
from controller.core.types import Action, CheckReport, GateResult, Phase, Plan, Routing, VersionInfo

FP = {"provider": "hashing", "name": "m", "version": "1", "dim": 8, "normalize": True, "optionsHash": "a"}
NOW = "2026-01-02T00:00:00Z"


def version(vid: str, verdict: str | None = "passed", msg: str = "") -> VersionInfo:
    return VersionInfo(id=vid, label=vid, fingerprint=FP, factory="Flat", metric="cosine", corpus_digest="c",
                       created=f"2026-01-0{vid[1]}T00:00:00Z", documents=10, verdict=verdict, verdict_message=msg)


@dataclass
class Case:
    id: str
    routing: Routing
    plan: Plan
    phase: Phase
    reason: str
    versions: list[VersionInfo] = field(default_factory=lambda: [version("v1"), version("v2")])
    kw: dict[str, Any] = field(default_factory=dict)
    message: str = ""


HELD_MSG = "v2 is held after a manual rollback; run `controller rollback idx --to v2` to release it"
MANUAL_MSG = "manual rollback: alias moved from v2 to v1"
CASES = [
    Case("healthy", Routing("v2"), Plan("idx", target="v2", message="up to date"), Phase.HEALTHY, R.UP_TO_DATE),
    Case("progressing", Routing("v1", "v2", 25), Plan("idx", target="v2"), Phase.PROGRESSING, R.WEIGHT_CHANGED,
         message="v2 serves 25% as candidate"),
    Case("pending", Routing("v1"), Plan("idx", (Action("check", "v2", R.CHECKS_PENDING, "check v2"),),
                                        target="v2"), Phase.PENDING, R.CHECKS_PENDING),
    Case("rolled back", Routing("v1"), Plan("idx", target="v2"), Phase.ROLLED_BACK, R.GATE_FAILED,
         versions=[version("v1"), version("v2", "failed", "ndcg@10 0.2 < min 0.5")],
         message="v2 rolled back: ndcg@10 0.2 < min 0.5"),
    Case("error", Routing("v1"), Plan("idx", target="v2"), Phase.STALLED, R.RECONCILE_ERROR,
         kw={"error": "StoreError: disk full"}, message="disk full"),
    Case("blocked", Routing("v1"), Plan("idx", blocked=R.INDEX_VERSION_IMMUTABLE, message="immutable"),
         Phase.STALLED, R.INDEX_VERSION_IMMUTABLE),
    Case("spec.suspend", Routing("v1"), Plan("idx", message="suspended: spec.suspend is true"), Phase.SUSPENDED,
         R.SUSPENDED),
    Case("suspend flag", Routing("v1", "v2", 25), Plan("idx", target="v2"), Phase.SUSPENDED, R.SUSPENDED,
         kw={"suspended": "suspended since T (incident 42)"}, message="incident 42"),
    Case("resumed", Routing("v1", "v2", 25), Plan("idx", target="v2"), Phase.PENDING, R.RESUMED,
         kw={"resumed": "resumed: the next pass applies the manifest"}),
    Case("held at the next reconcile", Routing("v1", held=("v2",)), Plan("idx", target="v2", message=HELD_MSG),
         Phase.PAUSED, R.HELD, message="held after a manual rollback"),
    Case("right after a manual rollback", Routing("v1", held=("v2",)), Plan("idx", target="v2"), Phase.PAUSED,
         R.MANUAL_ROLLBACK, kw={"manual": MANUAL_MSG}, message=MANUAL_MSG),
    Case("manual rollback with no known target", Routing("v1", held=("v2",)), Plan("idx"), Phase.PAUSED,
         R.MANUAL_ROLLBACK, kw={"manual": MANUAL_MSG}),
    Case("manual roll forward onto the target", Routing("v2", held=("v1",)), Plan("idx", target="v2"),
         Phase.HEALTHY, R.MANUAL_ROLLBACK, kw={"manual": "manual rollback: alias moved from v1 to v2"}),
    Case("manual rollback after the target failed its gates", Routing("v1", held=("v2",)), Plan("idx", target="v3"),
         Phase.PAUSED, R.MANUAL_ROLLBACK, kw={"manual": MANUAL_MSG}, message=MANUAL_MSG,
         versions=[version("v1"), version("v2"), version("v3", "failed", "ndcg@10 0.2 < min 0.5")]),
    Case("the failed target after the manual rollback's pass", Routing("v1", held=("v2",)),
         Plan("idx", target="v3"), Phase.ROLLED_BACK, R.GATE_FAILED,
         versions=[version("v1"), version("v2"), version("v3", "failed", "ndcg@10 0.2 < min 0.5")]),
    Case("an error beats a suspension", Routing("v1"), Plan("idx"), Phase.STALLED, R.RECONCILE_ERROR,
         kw={"error": "boom", "suspended": "suspended since T"}),
]

# The one rule: a condition is True exactly in these phases.
TRUE_IN = {"Ready": {Phase.HEALTHY}, "Progressing": {Phase.PROGRESSING, Phase.PENDING},
           "Degraded": {Phase.ROLLED_BACK}, "Stalled": {Phase.STALLED}}


def status_of(case: Case, previous: dict[str, Any] | None = None, now: str = NOW) -> dict[str, Any]:
    return compute_status(name="idx", alias="idx", routing=case.routing, versions=case.versions, plan=case.plan,
                          verdicts={}, manifest_digest="d", previous=previous, now=now, **case.kw)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_phase_reason_and_conditions(case: Case) -> None:
    s = status_of(case)
    assert s["phase"] == case.phase.value and type(s["phase"]) is str  # plain JSON/YAML, not an Enum
    assert case.message in s["message"]
    conditions = {c["type"]: c for c in s["conditions"]}
    assert set(conditions) == set(TRUE_IN)
    for kind, phases in TRUE_IN.items():
        cond = conditions[kind]
        assert cond["status"] == ("True" if case.phase in phases else "False"), (kind, cond)
        assert (cond["reason"], cond["message"]) == (case.reason, s["message"])
    json.dumps(s)


def test_transition_times_move_only_when_a_condition_flips() -> None:
    healthy, held = CASES[0], CASES[9]
    first = status_of(healthy)
    same = status_of(healthy, previous=first, now="2026-01-03T00:00:00Z")
    assert same == first  # an unchanged world: byte-identical status
    paused = status_of(held, previous=first, now="2026-01-04T00:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in paused["conditions"]}
    assert times["Ready"] == "2026-01-04T00:00:00Z"  # True -> False
    assert times["Stalled"] == NOW  # False -> False, though its reason changed


def report(version: str, passed: bool) -> CheckReport:
    gate = GateResult("ndcg@10", "min", 0.2 if not passed else 0.7, 0.5, passed,
                      f"ndcg@10 {'0.200 < min' if not passed else '0.700 >= min'} 0.500")
    return CheckReport(version, "v1", gates=[gate])


def test_last_cycle_names_the_rolled_back_candidate_and_its_gates() -> None:
    assert summarize_cycle([]) == {"rolledBack": False, "rolledBackVersions": [], "failedGates": []}
    cycle = summarize_cycle([report("v2", True), report("v3", False)])
    assert cycle["rolledBack"] and cycle["rolledBackVersions"] == ["v3"]
    assert cycle["failedGates"] == [{"version": "v3", "metric": "ndcg@10", "kind": "min", "value": 0.2,
                                     "threshold": 0.5, "message": "ndcg@10 0.200 < min 0.500"}]


def test_last_cycle_stays_on_paths_that_are_no_reconcile() -> None:
    failed = summarize_cycle([report("v3", False)])
    first = compute_status(name="idx", alias="idx", routing=Routing("v1"), versions=[version("v1")],
                           plan=Plan("idx", target="v1"), verdicts={}, manifest_digest="d", previous=None,
                           now=NOW, last_cycle=failed)
    later = compute_status(name="idx", alias="idx", routing=Routing("v1"), versions=[version("v1")],
                           plan=Plan("idx", target="v1"), verdicts={}, manifest_digest="d", previous=first,
                           now=NOW, manual="manual rollback")
    assert first["lastCycle"] == later["lastCycle"] == failed


def test_phase_is_a_string_enum() -> None:
    assert Phase("Paused") is Phase.PAUSED and Phase.PAUSED == "Paused" and str(Phase.STALLED) == "Stalled"
