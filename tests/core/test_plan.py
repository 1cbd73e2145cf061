"""Table-driven tests of the pure plan function."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from controller.core import reasons as R
from controller.core.plan import next_version_id, plan, previous_stable_of, versions_to_delete
from controller.core.types import Desired, Observed, Routing, VersionInfo

FP1 = {"provider": "hashing", "name": "m", "version": "1", "dim": 8, "normalize": True, "optionsHash": "a"}
FP2 = {**FP1, "version": "2", "optionsHash": "b"}


def version(vid, fp=FP1, *, label=None, factory="Flat", corpus="c1", created=None, verdict="passed", msg=""):
    return VersionInfo(id=vid, label=label or vid.split(".")[0], fingerprint=fp, factory=factory, metric="cosine",
                       corpus_digest=corpus, created=created or f"2026-01-0{vid[1]}T00:00:00Z",
                       documents=10, verdict=verdict, verdict_message=msg)


def desired(label="v1", fp=FP1, *, factory="Flat", pct=100.0, keep=3, suspend=False):
    return Desired(name="idx", alias="idx", label=label, fingerprint=fp, factory=factory, metric="cosine",
                   percentage=pct, keep=keep, suspend=suspend)


def observed(*versions, stable=None, candidate=None, weight=0.0, held=(), corpus="c1", to_embed=10,
             previous=None):
    return Observed(versions=tuple(versions), routing=Routing(stable, candidate, weight, tuple(held)),
                    corpus_digest=corpus, documents=10, to_embed=to_embed, previous_stable=previous)


@dataclass
class Case:
    id: str
    desired: Desired
    observed: Observed
    kinds: list[str]
    reasons: list[str] = field(default_factory=list)
    blocked: str | None = None
    target: str | None = None
    conditional: list[bool] | None = None


V1 = version("v1")
V2_25 = version("v2", FP2)

CASES = [
    Case("first version", desired(), observed(), ["build", "check", "promote"],
         [R.FIRST_VERSION, R.CHECKS_PENDING, R.FIRST_VERSION], target="v1", conditional=[False, False, True]),
    Case("nothing changed", desired(), observed(V1, stable="v1"), [], target="v1"),
    Case("model changed, new version", desired("v2", FP2, pct=25), observed(V1, stable="v1"),
         ["build", "check", "setWeight"], [R.NEW_VERSION, R.CHECKS_PENDING, R.WEIGHT_CHANGED], target="v2",
         conditional=[False, False, True]),
    Case("model changed at 100%", desired("v2", FP2), observed(V1, stable="v1"), ["build", "check", "promote"],
         [R.NEW_VERSION, R.CHECKS_PENDING, R.ROLLOUT_COMPLETE], target="v2"),
    Case("model changed under the same index.version", desired("v1", FP2), observed(V1, stable="v1"), [],
         blocked=R.INDEX_VERSION_IMMUTABLE),
    Case("index factory changed, new version", desired("v2", factory="HNSW32"), observed(V1, stable="v1"),
         ["build", "check", "promote"], [R.NEW_VERSION, R.CHECKS_PENDING, R.ROLLOUT_COMPLETE], target="v2"),
    Case("index factory changed under the same index.version", desired("v1", factory="HNSW32"),
         observed(V1, stable="v1"), [], blocked=R.INDEX_VERSION_IMMUTABLE),
    Case("percentage changed", desired("v2", FP2, pct=50), observed(V1, V2_25, stable="v1", candidate="v2",
                                                                    weight=25), ["setWeight"], [R.WEIGHT_CHANGED],
         target="v2", conditional=[False]),
    Case("percentage unchanged", desired("v2", FP2, pct=25),
         observed(V1, V2_25, stable="v1", candidate="v2", weight=25), [], target="v2"),
    Case("percentage raised to 100", desired("v2", FP2), observed(V1, V2_25, stable="v1", candidate="v2",
                                                                  weight=25), ["promote"], [R.ROLLOUT_COMPLETE]),
    Case("gate failed, already rolled back", desired("v2", FP2),
         observed(V1, version("v2", FP2, verdict="failed", msg="ndcg@10 0.2 < min 0.5"), stable="v1"), [],
         target="v2"),
    Case("gate failed while candidate", desired("v2", FP2),
         observed(V1, version("v2", FP2, verdict="failed"), stable="v1", candidate="v2", weight=10),
         ["abort"], [R.GATE_FAILED]),
    Case("built but not checked", desired("v2", FP2, pct=10), observed(V1, version("v2", FP2, verdict=None),
                                                                       stable="v1"),
         ["check", "setWeight"], [R.CHECKS_PENDING, R.WEIGHT_CHANGED], conditional=[False, True]),
    Case("manifest back on stable", desired("v1"), observed(V1, V2_25, stable="v1", candidate="v2", weight=25),
         ["abort"], [R.BACK_ON_STABLE]),
    Case("corpus changed under the same version", desired("v1"), observed(V1, stable="v1", corpus="c2",
                                                                          to_embed=3),
         ["build", "check", "promote"], [R.CORPUS_CHANGED, R.CHECKS_PENDING, R.ROLLOUT_COMPLETE], target="v1.r2"),
    Case("held after a manual rollback", desired("v2", FP2), observed(V1, V2_25, stable="v1", held=["v2"]), [],
         target="v2"),
    Case("suspended", desired("v2", FP2, suspend=True), observed(V1, stable="v1"), []),
    # Git revert semantics: the serving state is a function of the manifest and the kept versions
    Case("stable asked for at 25% goes back beside its previous stable", desired("v2", FP2, pct=25),
         observed(V1, V2_25, stable="v2", previous="v1"), ["rollback"], [R.REVERTED_TO_CANARY], target="v2"),
    Case("stable at 25% with a foreign candidate: withdraw it, then go back", desired("v2", FP2, pct=25),
         observed(V1, V2_25, version("v3", FP2), stable="v2", candidate="v3", weight=10, previous="v1"),
         ["abort", "rollback"], [R.BACK_ON_STABLE, R.REVERTED_TO_CANARY], target="v2"),
    Case("stable at 25%, previous stable garbage-collected", desired("v2", FP2, pct=25, keep=1),
         observed(V2_25, stable="v2", previous="v1"), [], blocked=R.PREVIOUS_STABLE_UNAVAILABLE, target="v2"),
    Case("stable at 25%, previous stable failed its gates", desired("v2", FP2, pct=25),
         observed(version("v1", verdict="failed", msg="ndcg@10 0.1 < min 0.5"), V2_25, stable="v2",
                  previous="v1"), [], blocked=R.PREVIOUS_STABLE_UNAVAILABLE, target="v2"),
    Case("first version at 25% has nothing to go back to", desired("v1", pct=25), observed(V1, stable="v1"), [],
         target="v1"),
    Case("stable at 100% stays, whatever came before", desired("v2", FP2), observed(V1, V2_25, stable="v2",
                                                                                 previous="v1"), [], target="v2"),
    Case("an older kept version at 100% is a rollback", desired("v1"), observed(V1, V2_25, stable="v2",
                                                                            previous="v1"),
         ["promote"], [R.ROLLBACK], target="v1"),
    Case("a newer version at 100% is a rollout", desired("v2", FP2), observed(V1, V2_25, stable="v1"),
         ["promote"], [R.ROLLOUT_COMPLETE], target="v2"),
    Case("a version beyond history.keep", desired("v4", FP2, keep=2),
         observed(version("v1"), version("v2"), version("v3"), version("v4", FP2), stable="v4"),
         ["delete", "delete"], [R.HISTORY_LIMIT, R.HISTORY_LIMIT]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_plan(case: Case) -> None:
    p = plan(case.desired, case.observed)
    assert [a.kind for a in p.actions] == case.kinds, p
    if case.reasons:
        assert [a.reason for a in p.actions] == case.reasons
    assert p.blocked == case.blocked
    if case.target:
        assert p.target == case.target
    if case.conditional is not None:
        assert [a.if_gates_pass for a in p.actions] == case.conditional
    assert all(a.message for a in p.actions)
    if not p.actions:
        assert p.message, "a plan with nothing to do still says why"


def test_build_counts_reused_documents() -> None:
    p = plan(desired("v1"), observed(V1, stable="v1", corpus="c2", to_embed=3))
    build = p.actions[0]
    assert (build.embed, build.reuse) == (3, 7)
    assert "embed 3 of 10 documents" in build.message


def test_immutable_message_names_both_models() -> None:
    p = plan(desired("v1", FP2), observed(V1, stable="v1"))
    assert "hashing/m@1" in p.message and "hashing/m@2" in p.message and "index.version" in p.message


def test_gc_never_deletes_stable_or_candidate() -> None:
    vs = [version(f"v{i}") for i in range(1, 6)]
    doomed = versions_to_delete(observed(*vs, stable="v1", candidate="v2", weight=10), keep=1, protect={"v5"})
    assert {v.id for v in doomed} == {"v3", "v4"}


def test_gc_keeps_the_newest() -> None:
    vs = [version(f"v{i}") for i in range(1, 6)]
    doomed = versions_to_delete(observed(*vs, stable="v5"), keep=3, protect={"v5"})
    assert [v.id for v in doomed] == ["v2", "v1"]


def test_next_version_id() -> None:
    assert next_version_id("v1", ()) == "v1"
    assert next_version_id("v1", (version("v1"),)) == "v1.r2"
    assert next_version_id("v1", (version("v1"), version("v1.r2", label="v1"))) == "v1.r3"


def test_plan_is_deterministic() -> None:
    d, o = desired("v2", FP2, pct=25), observed(V1, stable="v1")
    assert plan(d, o) == plan(d, o)


def test_revert_to_candidate_routes_back_beside_the_previous_stable() -> None:
    p = plan(desired("v2", FP2, pct=25), observed(V1, V2_25, stable="v2", previous="v1"))
    [action] = p.actions
    assert (action.version, action.baseline, action.weight) == ("v2", "v1", 25)
    assert "back to v1" in action.message and "25% candidate" in action.message


@pytest.mark.parametrize("previous_versions,why", [
    ((), "v1 was garbage-collected (history.keep is 1)"),
    ((version("v1", verdict="failed", msg="ndcg@10 0.1 < min 0.5"),), "v1 failed its gates (ndcg@10 0.1 < min 0.5)"),
    ((version("v1", verdict=None),), "v1 has no gate verdict"),
])
def test_a_revert_that_cannot_go_back_says_why_and_stays(previous_versions, why) -> None:
    p = plan(desired("v2", FP2, pct=25, keep=1), observed(*previous_versions, V2_25, stable="v2", previous="v1"))
    assert p.blocked == R.PREVIOUS_STABLE_UNAVAILABLE and not p.actions
    assert why in p.message and "v2 stays stable at 100%" in p.message


def test_a_blocked_revert_collects_no_garbage() -> None:
    vs = (version("v3", FP2), version("v4", FP2), version("v5", FP2))
    p = plan(desired("v5", FP2, pct=25, keep=1), observed(*vs, stable="v5", previous="v1"))
    assert p.blocked and p.actions == ()


def journal(*moves):
    """(from stable, to stable, reason) -> journal records"""
    return [{"from": {"stable": a}, "to": {"stable": b}, "reason": r} for a, b, r in moves]


@pytest.mark.parametrize("records,stable,expected", [
    ([], "v1", None),
    (journal((None, "v1", R.FIRST_VERSION)), "v1", None),
    (journal((None, "v1", R.FIRST_VERSION), ("v1", "v1", R.WEIGHT_CHANGED), ("v1", "v2", R.ROLLOUT_COMPLETE)),
     "v2", "v1"),
    # after a revert and a second promotion, v2's previous stable is still v1
    (journal((None, "v1", R.FIRST_VERSION), ("v1", "v2", R.ROLLOUT_COMPLETE), ("v2", "v1", R.REVERTED_TO_CANARY),
             ("v1", "v2", R.ROLLOUT_COMPLETE)), "v2", "v1"),
    # moves back do not make a fresh promotion: v1's previous stable stays what preceded v1
    (journal((None, "v1", R.FIRST_VERSION), ("v1", "v2", R.ROLLOUT_COMPLETE), ("v2", "v1", R.MANUAL_ROLLBACK)),
     "v1", None),
    (journal((None, "v1", R.FIRST_VERSION), ("v1", "v2", R.ROLLOUT_COMPLETE), ("v2", "v3", R.ROLLOUT_COMPLETE),
             ("v3", "v1", R.ROLLBACK)), "v1", None),
    (journal((None, "v1", R.FIRST_VERSION), ("v1", "v2", R.ROLLOUT_COMPLETE), ("v2", "v3", R.ROLLOUT_COMPLETE)),
     "v3", "v2"),
    (journal((None, "v1", R.FIRST_VERSION)), None, None),
    # a corpus revision of the stable label is no new promotion: v2.r2's previous stable is v1
    (journal((None, "v1", R.FIRST_VERSION), ("v1", "v2", R.ROLLOUT_COMPLETE), ("v2", "v2.r2", R.ROLLOUT_COMPLETE)),
     "v2.r2", "v1"),
])
def test_previous_stable_of(records, stable, expected) -> None:
    assert previous_stable_of(records, stable) == expected


def test_previous_stable_of_reads_labels_of_kept_versions() -> None:
    records = journal((None, "a", R.FIRST_VERSION), ("a", "b", R.ROLLOUT_COMPLETE), ("b", "c", R.ROLLOUT_COMPLETE))
    assert previous_stable_of(records, "c") == "b"
    assert previous_stable_of(records, "c", {"b": "v2", "c": "v2"}) == "a"  # c rebuilt b's label
