"""A command annotation is applied at most once, whatever rollout follows the one it was applied to.

The operator leaves `indexops.dev/command` on the object after applying it, and applies a value
only when the step state has not consumed it yet. A new rollout (a new version, or the steps
restarted by a manifest change) starts a fresh state; it must keep the consumed value, or the
next cycle applies the old command to the new rollout. The operator's order is kept here: the
annotation first (handlers.reconcile_resource), then the reconcile.
"""

from __future__ import annotations

from pathlib import Path

from controller.core.types import Routing
from controller.engine.reconcile import Hooks, reconcile_index
from controller.engine.rollout import apply_annotation, apply_command
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import V2_OPTIONS, manifest, write_manifest

T0 = 1_800_000_000.0
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]
V3_OPTIONS = {**V2_OPTIONS, "seed": 5}


def stepped(version: str, options: dict, steps: list = STEPS) -> dict:
    doc = manifest(version, options)
    doc["spec"]["rollout"] = {"steps": steps}
    return doc


def cycle(ws: Path, store: Store, doc: dict, at: float, annotation: str | None = None) -> dict:
    """One operator cycle: the annotation (if any) is applied first, then the manifest is reconciled."""
    if annotation is not None and store.index_dir("qs").is_dir():
        apply_annotation(store, "qs", annotation)
    [loaded] = load_manifests(write_manifest(ws, doc))
    return reconcile_index(loaded, store, hooks=Hooks(clock=lambda: at)).status


def test_promote_full_left_on_the_object_does_not_promote_the_next_version(ws, store):
    cycle(ws, store, manifest("v1"), T0)
    v2 = stepped("v2", V2_OPTIONS)
    cycle(ws, store, v2, T0 + 10)
    cycle(ws, store, v2, T0 + 20, "promote-full")
    assert store.routing("qs").stable == "v2"

    v3 = stepped("v3", V3_OPTIONS)  # git moves on; the annotation stays
    cycle(ws, store, v3, T0 + 30, "promote-full")
    status = cycle(ws, store, v3, T0 + 40, "promote-full")  # the next cycle (timer, resume)
    rollout = status["rollout"]
    assert store.routing("qs") == Routing(stable="v2", candidate="v3", weight=10.0)
    assert (rollout["version"], rollout["currentStepIndex"]) == ("v3", 1)
    assert not rollout["promoted"] and not rollout["aborted"] and status["phase"] == "Progressing"

    assert "promote-full applied" in apply_annotation(store, "qs", "promote-full:again")  # a new value applies


def test_abort_left_on_the_object_does_not_abort_the_restarted_rollout(ws, store):
    cycle(ws, store, manifest("v1"), T0)
    v2 = stepped("v2", V2_OPTIONS)
    cycle(ws, store, v2, T0 + 10)
    status = cycle(ws, store, v2, T0 + 20, "abort")
    assert status["rollout"]["aborted"] and status["phase"] == "RolledBack"

    fixed = stepped("v2", V2_OPTIONS, [{"setWeight": 5}, {"pause": {}}])  # a manifest change restarts the steps
    status = cycle(ws, store, fixed, T0 + 30, "abort")
    assert any(r["reason"] == "StepsRestarted" for r in store.journal("qs"))
    status = cycle(ws, store, fixed, T0 + 40, "abort")  # the next cycle
    rollout = status["rollout"]
    assert not rollout["aborted"] and not rollout["promoted"] and status["phase"] == "Progressing"
    assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=5.0)


def test_the_verbs_still_apply_after_a_carried_token(ws, store):
    """The CLI verbs record no token: they apply to the new rollout whatever the annotation consumed."""
    cycle(ws, store, manifest("v1"), T0)
    v2 = stepped("v2", V2_OPTIONS)
    cycle(ws, store, v2, T0 + 10)
    cycle(ws, store, v2, T0 + 20, "promote-full")
    v3 = stepped("v3", V3_OPTIONS)
    cycle(ws, store, v3, T0 + 30, "promote-full")
    assert store.rollout("qs")["consumedCommand"] == "promote-full"
    status = apply_command(store, "qs", "promote", now=T0 + 40)
    assert status["rollout"]["currentStepIndex"] == 3 and store.routing("qs").weight == 40.0
    status = apply_command(store, "qs", "abort", now=T0 + 50)
    assert status["rollout"]["aborted"]
    status = apply_command(store, "qs", "retry", now=T0 + 60)
    assert not status["rollout"]["aborted"] and store.routing("qs").weight == 10.0
