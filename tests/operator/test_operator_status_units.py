"""The operator's status comes from engine/status.py: the CR and the store say the same thing."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("kopf")

from controller.operator.handlers import OperatorConfig, Runtime, error_status, reconcile_resource  # noqa: E402
from controller.operator.body import store_for  # noqa: E402
from tests.operator.conftest import DATA_DIR, example  # noqa: E402


def body() -> dict:
    b = example("quickstart-v1.yaml")
    b["metadata"].update(uid="u-1", generation=2)
    return b


def test_the_cr_status_is_the_stored_status_and_errors_reach_both(tmp_path: Path) -> None:
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR))
    b = body()
    status = reconcile_resource(rt, b)
    store = store_for(tmp_path, "search")
    stored = store.status("quickstart")
    # the CR status is the stored dict plus observedGeneration (also on each condition)
    assert {k: v for k, v in status.items() if k not in ("observedGeneration", "conditions")} == {
        k: v for k, v in stored.items() if k != "conditions"}
    assert [{**c, "observedGeneration": 2} for c in stored["conditions"]] == status["conditions"]
    assert status["lastCycle"] == {"rolledBack": False, "rolledBackVersions": [], "failedGates": []}

    # an invalid spec: the CR says Stalled, the store (like the CLI's) is left as it was
    invalid = error_status(rt, b | {"status": status}, "field spec.corpus.path: not found", invalid=True)
    assert invalid["phase"] == "Stalled" and store.status("quickstart") == stored
    # any other failure: Stalled in both, and the hold-relevant manifest digest is kept
    failed = error_status(rt, b | {"status": status}, "StoreError: disk full")
    assert failed["phase"] == "Stalled" and store.status("quickstart")["phase"] == "Stalled"
    assert store.status("quickstart")["observedManifestDigest"] == stored["observedManifestDigest"]
    stalled = {c["type"]: c for c in failed["conditions"]}["Stalled"]
    assert (stalled["status"], stalled["reason"], stalled["message"]) == ("True", "ReconcileError",
                                                                         "StoreError: disk full")
