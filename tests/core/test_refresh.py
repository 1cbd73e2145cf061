"""Table-driven tests of the pure in-place refresh decision and of its place in the plan."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.core import reasons as R
from controller.core.plan import plan
from controller.core.refresh import RefreshFacts, RefreshPolicy, decide, row_changes
from controller.core.types import Desired, Observed, Routing, VersionInfo

FP = {"provider": "hashing", "name": "m", "version": "1", "dim": 8, "normalize": True, "optionsHash": "a"}
DAY = 86400.0
NOW = 100 * DAY
FACTS = RefreshFacts(base="v1", added=100, changed=5, removed=50, kept=295, blocker=None, refreshes=0,
                     full_build_at=NOW - DAY, full_build="v1")
ON = RefreshPolicy(True)


def version(vid, *, corpus="c1", stale=False, label="v1"):
    return VersionInfo(id=vid, label=label, fingerprint=FP, factory="Flat", metric="cosine", corpus_digest=corpus,
                       created=f"2026-01-0{len(vid)}T00:00:00Z", documents=10, verdict="passed", stale=stale)


def case(policy=ON, *, stable="v1", stable_label="v1", stale=False, candidate=None, facts=FACTS):
    return decide(policy, label="v1", stable=stable, stable_label=stable_label, stable_stale=stale,
                  candidate=candidate, facts=facts, now=NOW)


@pytest.mark.parametrize("got, kind, reason, says", [
    (case(), "inPlace", R.REFRESHED_IN_PLACE, "+100 added, 5 changed, -50 removed (295 vectors kept; refresh 1"),
    (case(stable=None, stable_label=None), "rebuild", R.CORPUS_CHANGED, "no stable version of index version v1"),
    (case(stable_label="v0"), "rebuild", R.CORPUS_CHANGED, "no stable version of index version v1"),
    (case(candidate="v2"), "rebuild", R.CORPUS_CHANGED, "candidate v2 is being rolled out"),
    (case(stale=True), "rebuild", R.CORPUS_CHANGED, "v1 is IndexStale"),
    (case(facts=None), "rebuild", R.CORPUS_CHANGED, "what changed since v1 was not observed"),
    (case(facts=replace(FACTS, blocker="FAISS HNSW32 is an HNSW graph, which cannot remove vectors")),
     "rebuild", R.CORPUS_CHANGED, "HNSW graph, which cannot remove vectors"),
    (case(RefreshPolicy(True, rebuild_after_refreshes=3), facts=replace(FACTS, refreshes=2)),
     "inPlace", R.REFRESHED_IN_PLACE, "refresh 3 since the full build v1"),
    (case(RefreshPolicy(True, rebuild_after_refreshes=3), facts=replace(FACTS, refreshes=3)),
     "rebuild", R.REBUILD_DUE, "3 in-place refreshes since the full build v1 (spec.reembed.rebuildAfter is 3)"),
    (case(RefreshPolicy(True, rebuild_after_seconds=2 * DAY, rebuild_after="2d")),
     "inPlace", R.REFRESHED_IN_PLACE, "refresh 1"),
    (case(RefreshPolicy(True, rebuild_after_seconds=2 * DAY, rebuild_after="2d"),
          facts=replace(FACTS, full_build_at=NOW - 3 * DAY)),
     "rebuild", R.REBUILD_DUE, "72.0h since the full build v1 (spec.reembed.rebuildAfter is 2d)"),
], ids=["in-place", "no-stable", "other-label", "candidate", "stale", "unobserved", "hnsw", "count-below",
        "count-reached", "duration-below", "duration-reached"])
def test_decision_table(got, kind, reason, says):
    assert (got.kind, got.reason) == (kind, reason)
    assert says in got.message


def test_no_policy_decides_nothing():
    assert case(None) is None and case(RefreshPolicy(False)) is None


def test_row_changes_counts_a_changed_document_as_removed_and_added():
    changes = row_changes(["a", "b", "c", "d"], ["1", "2", "3", "4"], ["b", "c", "e", "a"], ["2", "9", "5", "1"])
    assert changes.keep == [0, 1] and changes.new == [1, 2]
    assert (changes.added, changes.changed, changes.removed) == (1, 1, 1)


def desired(refresh=ON, steps=None, pct=100.0):
    return Desired(name="idx", alias="idx", label="v1", fingerprint=FP, factory="Flat", metric="cosine",
                   percentage=pct, keep=3, refresh=refresh, steps=steps)


def observed(*versions, stable="v1", candidate=None, facts=FACTS):
    return Observed(versions=tuple(versions), routing=Routing(stable, candidate, 25.0 if candidate else 0.0),
                    corpus_digest="c2", documents=350, to_embed=105, reuse_from="v1", refresh=facts)


def test_plan_refreshes_the_stable_version_checks_it_and_promotes_it_without_a_rollout():
    p = plan(desired(pct=25.0), observed(version("v1")), NOW)
    assert [(a.kind, a.version, a.reason) for a in p.actions] == [
        ("refresh", "v1.r2", R.REFRESHED_IN_PLACE), ("check", "v1.r2", R.CHECKS_PENDING),
        ("promote", "v1.r2", R.REFRESHED_IN_PLACE)]
    refresh, _, promote = p.actions
    assert (refresh.embed, refresh.reuse, refresh.baseline) == (105, 295, "v1")
    assert promote.if_gates_pass and promote.baseline == "v1"
    assert "v1 refreshed in place (+100 added, 5 changed, -50 removed)" in promote.message


def test_plan_rebuilds_when_the_backend_cannot_and_still_promotes_the_serving_label():
    facts = replace(FACTS, blocker="backend qdrant cannot update a version in place")
    p = plan(desired(), observed(version("v1"), facts=facts), NOW)
    assert [a.kind for a in p.actions] == ["build", "check", "promote"]
    assert "full rebuild instead of an in-place refresh: backend qdrant cannot" in p.actions[0].message


def test_plan_without_in_place_or_with_a_candidate_keeps_the_revision_rollout():
    assert [a.kind for a in plan(desired(None, pct=25.0), observed(version("v1")), NOW).actions] == [
        "build", "check", "setWeight"]
    p = plan(desired(), observed(version("v1"), version("v2", label="v2"), candidate="v2"), NOW)
    assert p.actions[0].kind == "build" and p.actions[0].reason == R.CORPUS_CHANGED


def test_plan_with_a_version_of_the_corpus_refreshes_nothing():
    p = plan(desired(), observed(version("v1"), version("v1.r2", corpus="c2"), stable="v1.r2", facts=None), NOW)
    assert p.actions == () and p.target == "v1.r2"
