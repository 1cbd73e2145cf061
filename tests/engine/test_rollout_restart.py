"""Only a change of what defines a stepped rollout restarts its steps.

The manifest digest covers the whole spec; spec.onDelete, history or reembed changing must not
send a running rollout back to its first step. The step state keeps a separate rollout digest;
a state written before it existed has only the manifest digest and is compared as before, so an
upgrade restarts no rollout in flight.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.core.plan import rollout_digest
from controller.core.types import Routing
from controller.engine import rollout
from controller.engine.reconcile import Hooks, desired_of, reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import V2_OPTIONS, manifest, write_manifest

T0 = 1_800_000_000.0
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]


def stepped(steps: list = STEPS, **kw) -> dict:
    doc = manifest("v2", V2_OPTIONS, **kw)
    doc["spec"]["rollout"] = {"steps": steps}
    return doc


def apply(ws: Path, doc: dict, store: Store, at: float):
    [loaded] = load_manifests(write_manifest(ws, doc))
    return reconcile_index(loaded, store, hooks=Hooks(clock=lambda: at))


@pytest.fixture
def at_step_3(ws, store):
    """v2 at its second pause (step 4/4, weight 40): well past the start."""
    apply(ws, manifest("v1"), store, T0 - 100)
    apply(ws, stepped(), store, T0)
    rollout.apply_command(store, "qs", "promote", now=T0 + 5)
    assert store.routing("qs").weight == 40.0
    return store


def restarted(store: Store) -> bool:
    return any(r["reason"] == "StepsRestarted" for r in store.journal("qs"))


@pytest.mark.parametrize("change", [{"onDelete": "delete"}, {"history": {"keep": 4}},
                                    {"reembed": {"shards": 2}}])
def test_a_change_outside_the_rollout_does_not_restart_the_steps(at_step_3, ws, change):
    store = at_step_3
    doc = stepped()
    doc["spec"].update(change)
    result = apply(ws, doc, store, T0 + 10)
    assert result.status["rollout"]["currentStepIndex"] == 3 and store.routing("qs").weight == 40.0
    assert not restarted(store)
    [loaded] = load_manifests(write_manifest(ws, doc))
    assert store.rollout("qs")["manifestDigest"] == loaded.digest  # later commands journal this manifest
    assert apply(ws, doc, store, T0 + 20).executed == []  # recorded once, then nothing to do


@pytest.mark.parametrize("change", [{"steps": [{"setWeight": 5}, {"pause": {}}]}, {"percentage": 50}])
def test_a_change_of_the_rollout_still_restarts_the_steps(at_step_3, ws, change):
    store = at_step_3
    doc = stepped(change.get("steps", STEPS))
    doc["spec"]["rollout"].update({k: v for k, v in change.items() if k != "steps"})
    result = apply(ws, doc, store, T0 + 10)
    assert restarted(store) and result.status["rollout"]["currentStepIndex"] == 1


def old_state(store: Store) -> dict:
    """The step state as the code before rolloutDigest wrote it."""
    path = store.index_dir("qs") / "rollout.json"
    state = json.loads(path.read_text())
    state.pop("rolloutDigest", None)
    path.write_text(json.dumps(state))
    return state


def test_a_state_from_before_the_upgrade_does_not_restart_and_gets_the_digest(at_step_3, ws):
    store = at_step_3
    old_state(store)
    result = apply(ws, stepped(), store, T0 + 10)  # the first cycle of the new code, same manifest
    assert not restarted(store) and result.status["rollout"]["currentStepIndex"] == 3
    assert store.rollout("qs")["rolloutDigest"]  # from now on only the rollout's parts count
    doc = stepped()
    doc["spec"]["onDelete"] = "delete"
    apply(ws, doc, store, T0 + 20)
    assert not restarted(store) and store.routing("qs").weight == 40.0


def test_a_state_from_before_the_upgrade_with_another_manifest_restarts_as_before(at_step_3, ws):
    """Without its rollout digest the old rule decides: a manifest changed meanwhile restarts the steps."""
    store = at_step_3
    old_state(store)
    doc = stepped()
    doc["spec"]["onDelete"] = "delete"
    apply(ws, doc, store, T0 + 10)
    assert restarted(store) and store.routing("qs") == Routing(stable="v1", candidate="v2", weight=10.0)


ANALYSIS = [{"setWeight": 20}, {"analysis": {"gates": [{"metric": "ctr", "maxDrop": 0.05}], "interval": "1m",
                                             "minSamples": 100, "maxDuration": "30m"}}, {"pause": {}}]


def test_an_analysis_step_is_still_looked_at_after_a_change_outside_the_rollout(ws, store):
    apply(ws, manifest("v1"), store, T0 - 100)
    apply(ws, stepped(ANALYSIS), store, T0)
    doc = stepped(ANALYSIS)
    doc["spec"]["onDelete"] = "delete"
    [loaded] = load_manifests(write_manifest(ws, doc))
    state = rollout.stored_state(store, "qs")
    assert state is not None and state.manifest_digest != loaded.digest  # not recorded yet
    verdict, _ = rollout.step_inputs(loaded, store, state, T0 + 120, ask_confirm=False,
                                     rollout_digest=rollout_digest(desired_of(loaded)))
    assert verdict is not None  # the look is due and taken, not skipped as for a restart
