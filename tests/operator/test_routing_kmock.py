"""The routing ConfigMap is label-scoped: the operator never patches or deletes a ConfigMap it does not own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.operator.conftest import NAMESPACE, Api, eventually, example
from tests.operator.kmock_state import StatefulEmulator
from tests.operator.test_operator_kmock import phase

pytestmark = [pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]
CM = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


async def test_a_foreign_configmap_with_the_routing_name_is_never_touched(cluster: Api, operator) -> None:
    rt, handle = operator
    foreign = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "foreign-routing", "namespace": NAMESPACE, "labels": {"team": "search"}},
               "data": {"owner": "someone else"}}
    await cluster._call("POST", CM, foreign)
    body = example("quickstart-v1.yaml")
    body["metadata"]["name"] = "foreign"
    await cluster.create(body)

    def stalled_with_reason():
        status = (cluster.get("foreign") or {}).get("status") or {}
        return status if status.get("phase") == "Stalled" and "not managed" in str(status) else None
    status = await eventually(stalled_with_reason, 60, "a Stalled status naming the foreign ConfigMap")
    assert "foreign-routing" in str(status)
    cm = cluster.configmap("foreign")
    assert cm["data"] == {"owner": "someone else"} and cm["metadata"]["labels"] == {"team": "search"}

    await cluster.delete("foreign")  # the finalizer must not delete it either
    await eventually(lambda: cluster.get("foreign") is None, 30, "the finalizer")
    assert cluster.configmap("foreign")["data"] == {"owner": "someone else"}
    assert not handle.errors


async def test_our_configmap_carries_the_labels_and_is_removed_with_the_index(cluster: Api, operator) -> None:
    body = example("quickstart-v1.yaml")
    body["metadata"]["name"] = "owned"
    await cluster.create(body)
    await eventually(phase(cluster, "owned", "Healthy", 1), 60, "Healthy")
    labels = cluster.configmap("owned")["metadata"]["labels"]
    assert labels == {"app.kubernetes.io/managed-by": "embedding-index-controller", "indexops.dev/index": "owned"}
    await cluster.delete("owned")
    await eventually(lambda: cluster.get("owned") is None and cluster.configmap("owned") is None, 30,
                     "the resource and its ConfigMap gone")


async def test_configmap_carries_the_mirror_and_interleave_shares_of_a_stepped_rollout(cluster: Api,
                                                                                     operator) -> None:
    """A router fed from the ConfigMap must mirror and interleave like `controller serve`: the shares are
    the store's routing record, back to 0 when the rollout is aborted."""
    import json

    await cluster.create(example("quickstart-v1.yaml"))
    await eventually(phase(cluster, "quickstart", "Healthy", 1), 60, "v1 Healthy")
    spec = example("quickstart-v2-canary.yaml")["spec"]
    spec["rollout"] = {"steps": [{"setMirror": 30}, {"setWeight": 10},
                                 {"interleave": {"percentage": 20, "minQueries": 50, "interval": "1h"}}]}
    await cluster.patch("quickstart", {"spec": spec})

    def shares():
        data = (cluster.configmap("quickstart") or {}).get("data") or {}
        return data if data.get("interleave") == "20" else None
    data = await eventually(shares, 60, "the ConfigMap with the interleave step's share")
    assert (data["stable"], data["candidate"], data["weight"], data["mirror"]) == ("v1", "v2", "10", "30")
    assert json.loads(data["routing.json"]) == {"alias": "quickstart", "stable": "v1", "candidate": "v2",
                                                "weight": 10.0, "mirror": 30.0, "interleave": 20.0, "held": []}

    await cluster.patch("quickstart", {"metadata": {"annotations": {"indexops.dev/command": "abort"}}})

    def cleared():
        data = (cluster.configmap("quickstart") or {}).get("data") or {}
        return data if data.get("candidate") == "" and data.get("mirror") == "0" else None
    data = await eventually(cleared, 30, "the shares back to 0 after the abort")
    assert (data["weight"], data["interleave"]) == ("0", "0")
    assert json.loads(data["routing.json"])["mirror"] == 0.0


async def test_a_deleted_resources_finalizer_keeps_off_the_configmap_its_successor_adopted(cluster: Api) -> None:
    """Delete-and-recreate under one name: the old object's finalizer may run after the new object's cycle
    adopted `<name>-routing`; removing it then would take the new object's routing away."""
    import kubernetes

    from controller.operator.routing import KubePublisher, owner_reference

    conf = kubernetes.client.Configuration()
    conf.host = cluster.url
    publisher = KubePublisher(kubernetes.client.ApiClient(conf), timeout=10.0)
    old, new = example("quickstart-v1.yaml"), example("quickstart-v1.yaml")
    old["metadata"]["uid"], new["metadata"]["uid"] = "uid-old", "uid-new"
    loop = asyncio.get_running_loop()

    async def call(method: Any, *args: Any) -> None:  # the blocking client, off the emulator's event loop
        await loop.run_in_executor(None, method, *args)

    await call(publisher.publish, NAMESPACE, "quickstart", owner_reference(old), {"stable": "v1"})
    await call(publisher.publish, NAMESPACE, "quickstart", owner_reference(new), {"stable": "v1"})  # adopted
    await call(publisher.remove, NAMESPACE, "quickstart", "uid-old")
    cm = cluster.configmap("quickstart")
    assert cm is not None and [o["uid"] for o in cm["metadata"]["ownerReferences"]] == ["uid-new"]
    await call(publisher.remove, NAMESPACE, "quickstart", "uid-new")
    assert cluster.configmap("quickstart") is None
