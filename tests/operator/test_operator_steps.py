"""Stepped rollouts under the real kopf operator (kmock emulator): steps run on the timer's tick and the
`indexops.dev/command` annotation promotes, aborts and retries, each value once."""

from __future__ import annotations

import pytest

from tests.operator.conftest import Api, eventually, example
from tests.operator.kmock_state import StatefulEmulator

pytestmark = [pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]


def rollout(api: Api, name: str, check) -> object:
    def probe():
        status = (api.get(name) or {}).get("status") or {}
        return status if check(status) else None
    return probe


async def test_command_annotation_drives_the_steps(cluster: Api, operator) -> None:
    await cluster.create(example("quickstart-v1.yaml"))
    await eventually(rollout(cluster, "quickstart", lambda s: s.get("phase") == "Healthy"), 30, "v1 Healthy")
    spec = example("quickstart-v2-canary.yaml")["spec"]
    spec["rollout"] = {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 40}, {"pause": {}}]}
    await cluster.patch("quickstart", {"spec": spec})
    status = await eventually(rollout(cluster, "quickstart", lambda s: (s.get("rollout") or {}).get(
        "currentStepIndex") == 1), 60, "v2 paused at step 2")
    assert status["weight"] == 10.0 and "controller promote" in status["rollout"]["waitingFor"]

    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "promote"}}})
    status = await eventually(rollout(cluster, "quickstart", lambda s: (s.get("rollout") or {}).get(
        "currentStepIndex") == 3), 30, "promoted past the pause")
    assert status["weight"] == 40.0

    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "abort"}}})
    status = await eventually(rollout(cluster, "quickstart", lambda s: s.get("phase") == "RolledBack"), 30,
                              "aborted")
    assert status["weight"] == 0 and status["rollout"]["aborted"]

    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "promote-full:1"}}})
    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "retry"}}})
    status = await eventually(rollout(cluster, "quickstart", lambda s: s.get("phase") == "Progressing"), 30,
                              "retried")
    assert status["rollout"]["currentStepIndex"] == 1 and status["weight"] == 10.0
    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "promote-full:2"}}})
    status = await eventually(rollout(cluster, "quickstart", lambda s: s.get("phase") == "Healthy"), 30, "v2 stable")
    assert status["stable"]["version"] == "v2"
