"""The real operator on the API emulator: an `abort` annotation left on the object is not applied again
to the rollout a spec fix restarts (docs/rollouts.md: aborted "until retry or a manifest change")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.operator.conftest import Api, cluster, eventually, example, operator, operator_config  # noqa: F401
from tests.operator.kmock_state import StatefulEmulator

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]
STEPS = [{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]


def status(api: Api) -> dict[str, Any]:
    return (api.get("quickstart") or {}).get("status") or {}


async def test_a_stale_abort_does_not_abort_the_restarted_rollout(cluster: Api, operator) -> None:
    await cluster.create(example("quickstart-v1.yaml"))
    await eventually(lambda: status(cluster).get("phase") == "Healthy", 60, "v1 Healthy")
    spec = example("quickstart-v2-canary.yaml")["spec"]
    spec["rollout"] = {"steps": STEPS}
    await cluster.patch("quickstart", {"spec": spec})
    await eventually(lambda: (status(cluster).get("rollout") or {}).get("currentStepIndex") == 1, 60, "v2 step 2")
    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "abort"}}})
    await eventually(lambda: status(cluster).get("phase") == "RolledBack", 30, "aborted")

    await cluster.patch("quickstart", {"spec": {"rollout": {"steps": [{"setWeight": 5}, {"pause": {}}]}}})
    generation = cluster.get("quickstart")["metadata"]["generation"]
    await eventually(lambda: status(cluster).get("observedGeneration") == generation
                     and status(cluster).get("weight") == 5, 30, "the restarted rollout at 5%")
    seen = set()
    for _ in range(24):  # several timer cycles (interval 2 s) with the annotation still there
        current = status(cluster)
        seen.add((current.get("phase"), current.get("weight"), (current.get("rollout") or {}).get("aborted")))
        await asyncio.sleep(0.5)
    assert seen == {("Progressing", 5, False)}
