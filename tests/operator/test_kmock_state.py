"""The stateful kmock extension behaves like the API server where kopf and the operator rely on it."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import pytest

from tests.operator.conftest import EIDX, NAMESPACE, Api, example
from tests.operator.kmock_state import StatefulEmulator

kubernetes = pytest.importorskip("kubernetes")

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]
OBJ = EIDX.format(ns=NAMESPACE) + "/quickstart"


async def test_metadata_generation_status_subresource_and_conflicts(cluster: Api) -> None:
    created = await cluster.create(example("quickstart-v1.yaml"))
    meta = created["metadata"]
    assert meta["generation"] == 1 and meta["uid"] and meta["creationTimestamp"] and meta["resourceVersion"]
    with pytest.raises(AssertionError, match="-> 409"):
        await cluster.create(example("quickstart-v1.yaml"))  # AlreadyExists

    patched = await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 50}}})
    assert patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])

    # The status subresource changes only status, the main resource never changes status.
    st = await cluster._call("PATCH", OBJ + "/status", {"status": {"phase": "Healthy"},
                                                        "spec": {"rollout": {"percentage": 1}}},
                             "application/merge-patch+json")
    assert st["status"] == {"phase": "Healthy"} and st["spec"]["rollout"]["percentage"] == 50
    assert st["metadata"]["generation"] == 2
    main = await cluster.patch("quickstart", {"status": {"phase": "Hacked"}})
    assert main["status"] == {"phase": "Healthy"}

    # A no-op write bumps nothing.
    again = await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 50}}})
    assert again["metadata"]["resourceVersion"] == st["metadata"]["resourceVersion"]

    # Optimistic concurrency: a stale resourceVersion is a 409, a failed JSON-patch test a 422.
    stale = {"metadata": {"resourceVersion": meta["resourceVersion"]}, "spec": {"suspend": True}}
    with pytest.raises(AssertionError, match="-> 409"):
        await cluster._call("PATCH", OBJ, stale, "application/merge-patch+json")
    ops = [{"op": "test", "path": "/metadata/resourceVersion", "value": meta["resourceVersion"]},
           {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]}]
    with pytest.raises(AssertionError, match="-> 422"):
        await cluster._call("PATCH", OBJ, ops, "application/json-patch+json")
    ops[0]["value"] = again["metadata"]["resourceVersion"]
    fin = await cluster._call("PATCH", OBJ, ops, "application/json-patch+json")
    assert fin["metadata"]["finalizers"] == ["x/y"]

    # Deletion waits for the finalizers.
    deleting = await cluster.delete("quickstart")
    assert deleting["metadata"]["deletionTimestamp"] and cluster.get("quickstart") is not None
    await cluster._call("PATCH", OBJ, {"metadata": {"finalizers": None}}, "application/merge-patch+json")
    assert cluster.get("quickstart") is None


async def test_injected_faults_hit_only_the_matching_requests(cluster: Api) -> None:
    await cluster.create(example("quickstart-v1.yaml"))
    cluster.emulator.fail("PATCH", r"/quickstart$", 500, times=1)
    with pytest.raises(AssertionError, match="-> 500"):
        await cluster.patch("quickstart", {"spec": {"suspend": True}})
    assert (await cluster.patch("quickstart", {"spec": {"suspend": True}}))["spec"]["suspend"] is True


async def test_lease_election_has_one_leader_and_loses_stale_rounds(cluster: Api) -> None:
    from controller.operator.leader import LeaseElector

    conf = kubernetes.client.Configuration()
    conf.host = cluster.url
    api = kubernetes.client.ApiClient(conf)
    a = LeaseElector(api, NAMESPACE, "eic", "pod-a", lease_duration=15, renew_deadline=10)
    b = LeaseElector(api, NAMESPACE, "eic", "pod-b", lease_duration=15, renew_deadline=10)
    loop = asyncio.get_running_loop()

    async def round_(elector: LeaseElector) -> bool:
        return await loop.run_in_executor(None, elector.try_acquire_or_renew)

    assert await round_(a)            # creates the Lease
    assert not await round_(b)        # a holds a live lease
    assert await round_(a)            # renews
    b.now = lambda: datetime.now(timezone.utc) + timedelta(seconds=20)  # a stopped renewing
    assert await round_(b)            # takes over
    lease = cluster.emulator.body("leases", NAMESPACE, "eic")
    assert lease["spec"]["holderIdentity"] == "pod-b" and lease["spec"]["leaseTransitions"] == 1
    assert not await round_(a)        # a sees b's live lease and steps back
    cluster.emulator.fail("PUT", r"/leases/eic$", 409)
    assert not await round_(b)        # a conflicting write loses the round, no exception

    import threading

    lost: list[bool] = []
    stop = threading.Event()
    b.retry_period, b.renew_deadline = 0.05, 0.2
    cluster.emulator.fail("PUT", r"/leases/eic$", 500, times=1000)
    await loop.run_in_executor(None, b.keep_renewing, stop, lambda: lost.append(True))
    assert lost == [True]             # renewals failed past the deadline: step down
