"""The operator's CR status is the engine's status: a revert goes back, a manual rollback is Paused.

The real kopf operator against the stateful kmock emulator (see test_operator_kmock.py), and the
real `controller` CLI on the operator's store, as an admin would run it from a shell in the pod.
"""

from __future__ import annotations

import json

import pytest

from controller.cli.main import main as cli
from tests.operator.conftest import NAMESPACE, Api, eventually, example
from tests.operator.kmock_state import StatefulEmulator

pytestmark = [pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]


def status_where(api: Api, name: str, **wanted):
    def check():
        status = (api.get(name) or {}).get("status") or {}
        return status if all(status.get(k) == v for k, v in wanted.items()) else None
    return check


async def test_revert_goes_back_and_a_manual_rollback_pauses_the_resource(cluster: Api, operator, capsys) -> None:
    rt, _ = operator
    store = rt.config.store_root / NAMESPACE
    await cluster.create(example("quickstart-v1.yaml"))
    await eventually(status_where(cluster, "quickstart", phase="Healthy", observedGeneration=1), 30, "v1")
    canary = example("quickstart-v2-canary.yaml")
    await cluster.patch("quickstart", {"spec": canary["spec"]})
    await eventually(status_where(cluster, "quickstart", phase="Progressing", observedGeneration=2), 60, "v2 25%")
    await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 100}}})
    await eventually(status_where(cluster, "quickstart", phase="Healthy", observedGeneration=3), 30, "v2 stable")

    # "revert the commit to go back": the spec at 25% again puts v2 back beside v1
    await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 25}}})
    status = await eventually(status_where(cluster, "quickstart", phase="Progressing", observedGeneration=4),
                              30, "v2 back to a 25% candidate")
    assert (status["stable"]["version"], status["candidate"]["version"], status["weight"]) == ("v1", "v2", 25.0)
    assert "RevertedToCanary" in {e["reason"] for e in cluster.events("quickstart")}
    await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 100}}})
    await eventually(status_where(cluster, "quickstart", phase="Healthy", observedGeneration=5), 30, "promoted")

    # an admin rolls back by hand; the next (timer) cycle keeps the hold and the CR says so
    assert cli(["rollback", "quickstart", "--store", str(store)]) == 0
    status = await eventually(status_where(cluster, "quickstart", phase="Paused"), 20, "Paused")
    conditions = {c["type"]: c for c in status["conditions"]}
    assert {c["status"] for c in conditions.values()} == {"False"}, conditions
    assert {c["reason"] for c in conditions.values()} <= {"ManualRollback", "HeldAfterRollback"}
    assert all(c["message"] == status["message"] and "rollback" in c["message"] for c in conditions.values())
    assert status["stable"]["version"] == "v1" and status["held"] == ["v2"]

    # the CLI reads the same status from the store: phase and conditions agree with the CR
    capsys.readouterr()
    assert cli(["status", "quickstart", "-o", "json", "--store", str(store)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["phase"] == "Paused"
    cr = {c["type"]: (c["status"], c["reason"]) for c in (cluster.get("quickstart") or {})["status"]["conditions"]}
    assert {c["type"]: (c["status"], c["reason"]) for c in shown["conditions"]} == cr
