"""Status on every exit path, through the engine and the CLI, on a real store with real FAISS builds."""

from __future__ import annotations

import json
import pytest

from controller.cli.main import main as cli
from controller.engine.manual import rollback
from controller.engine.reconcile import Hooks
from controller.engine.suspend import resume, suspend
from tests.engine.test_reconcile import apply
from tests.helpers import BAD_OPTIONS, V2_OPTIONS, manifest

CONDITIONS = ("Ready", "Progressing", "Degraded", "Stalled")


def conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def assert_agrees(status: dict, phase: str, reason: str, text: str) -> None:
    """The phase, and every condition saying the same thing with the same reason and message."""
    assert status["phase"] == phase, status["message"]
    assert text in status["message"], status["message"]
    conds = conditions(status)
    wanted_true = {"Healthy": "Ready", "Progressing": "Progressing", "Pending": "Progressing",
                   "RolledBack": "Degraded", "Stalled": "Stalled"}.get(phase)
    for kind in CONDITIONS:
        assert conds[kind]["status"] == ("True" if kind == wanted_true else "False"), (kind, conds[kind])
        assert conds[kind]["reason"] == reason and conds[kind]["message"] == status["message"]


def test_manual_rollback_is_paused_with_its_reason_in_the_store_and_the_cli(ws, store, capsys):
    apply(ws, manifest("v1"), store)
    apply(ws, manifest("v2", V2_OPTIONS), store)
    assert store.status("qs")["phase"] == "Healthy"

    assert cli(["rollback", "qs", "--store", str(store.root)]) == 0
    capsys.readouterr()
    assert cli(["status", "qs", "-o", "json", "--store", str(store.root)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert_agrees(shown, "Paused", "ManualRollback", "manual rollback: alias moved from v2 to v1")
    assert shown["stable"]["version"] == "v1" and shown["held"] == ["v2"]
    assert shown["observedManifestDigest"] == store.journal("qs")[-2]["manifestDigest"]  # the hold survives
    assert cli(["status", "qs", "--store", str(store.root)]) == 0
    assert "phase Paused" in capsys.readouterr().out

    # reconciling the unchanged manifest keeps the hold, and says how to release it
    held = apply(ws, manifest("v2", V2_OPTIONS), store)
    assert held.executed == []
    assert_agrees(held.status, "Paused", "HeldAfterRollback", "controller rollback qs --to v2")
    assert store.status("qs") == held.status

    # rolling forward onto the manifest's version: Healthy again
    rollback(store, "qs", to="v2")
    assert_agrees(store.status("qs"), "Healthy", "ManualRollback", "alias moved from v1 to v2")
    assert_agrees(apply(ws, manifest("v2", V2_OPTIONS), store).status, "Healthy", "UpToDate", "v2")


def test_last_cycle_tells_ci_a_candidate_was_rolled_back(ws, store):
    first = apply(ws, manifest("v1"), store)
    assert first.status["lastCycle"] == {"rolledBack": False, "rolledBackVersions": [], "failedGates": []}
    bad = apply(ws, manifest("v3", BAD_OPTIONS, pct=50), store)
    cycle = bad.status["lastCycle"]
    assert cycle["rolledBack"] and cycle["rolledBackVersions"] == ["v3"]
    assert {(g["version"], g["metric"], g["kind"]) for g in cycle["failedGates"]} == {
        ("v3", "ndcg@10", "min"), ("v3", "ndcg@10", "maxDrop")}
    assert all(g["value"] is not None and g["threshold"] is not None for g in cycle["failedGates"])
    assert_agrees(bad.status, "RolledBack", "GateFailed", "v3 rolled back")
    again = apply(ws, manifest("v3", BAD_OPTIONS, pct=50), store)
    assert again.status["lastCycle"]["rolledBack"] is False  # nothing was rolled back this time...
    assert again.status["phase"] == "RolledBack"  # ...but the index stays degraded


def test_a_failed_cycle_is_stalled_with_the_error(ws, store):
    apply(ws, manifest("v1"), store)

    def notifier_down(_name: str, event: dict) -> None:
        if event["event"] == "ShadowBuilt":
            raise ConnectionError("webhook receiver refused the connection")

    with pytest.raises(ConnectionError):
        apply(ws, manifest("v2", V2_OPTIONS, pct=25), store, hooks=Hooks(on_transition=notifier_down))
    status = store.status("qs")
    assert_agrees(status, "Stalled", "ReconcileError", "ConnectionError: webhook receiver refused")
    # the failed manifest was not applied: the digest stays the last applied one
    assert status["observedManifestDigest"] == store.journal("qs")[-1]["manifestDigest"]
    recovered = apply(ws, manifest("v2", V2_OPTIONS, pct=25), store)
    assert_agrees(recovered.status, "Progressing", "WeightChanged", "v2 serves 25%")


def test_a_first_cycle_that_fails_leaves_no_status(ws, store):
    def fail(_name: str, event: dict) -> None:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        apply(ws, manifest("v1"), store, hooks=Hooks(on_transition=fail))
    assert store.status("qs") is None


def test_suspend_and_resume_show_in_status(ws, store):
    apply(ws, manifest("v1"), store)
    suspend(store, "qs", "incident 42")
    assert_agrees(store.status("qs"), "Suspended", "Suspended", "incident 42")
    # a reconcile by hand still runs, and status keeps saying sync and watch leave the index alone
    by_hand = apply(ws, manifest("v2", V2_OPTIONS, pct=25), store)
    assert by_hand.executed and by_hand.status["candidate"]["version"] == "v2"
    assert_agrees(by_hand.status, "Suspended", "Suspended", "controller resume qs")
    assert resume(store, "qs")
    assert_agrees(store.status("qs"), "Pending", "Resumed", "resumed")
    assert_agrees(apply(ws, manifest("v2", V2_OPTIONS, pct=25), store).status, "Progressing", "WeightChanged",
                  "v2 serves 25%")
