"""Operator faults on the Kubernetes API emulator: one test per fault of issue 9 point 7.

410 Gone on a watch, 429 with Retry-After (ours and kopf's requests), 401/403, a hung API
server, the lease lost in the middle of a reconcile, a SIGKILLed leader that never released
its lease, deletion and delete-and-recreate during a reconcile, ENOSPC/EROFS on the store.
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import pytest

from controller.operator.handlers import OperatorConfig, configure_settings
from controller.operator.leader import LeaseElector
from controller.store import atomic
from tests.operator.conftest import NAMESPACE, Api, eventually, example
from tests.operator.kmock_state import StatefulEmulator
from tests.operator.test_operator_kmock import phase

import kopf
import kubernetes

pytestmark = [pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]
REPO = Path(__file__).resolve().parents[2]
EIDX_PATH = f"/apis/indexops.dev/v1alpha1/namespaces/{NAMESPACE}/embeddingindexes"
CM_PATH = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


@pytest.fixture
def operator_config(operator_config: OperatorConfig) -> OperatorConfig:
    """Short fault backoffs and API timeout: the production code paths on a test clock."""
    return replace(operator_config, auth_backoff=3.0, store_full_backoff=3.0, api_timeout=1.5)


def index(name: str, source: str = "quickstart-v1.yaml") -> dict[str, Any]:
    body = example(source)
    body["metadata"]["name"] = name
    return body


def condition(api: Api, name: str, kind: str) -> dict[str, Any] | None:
    status = (api.get(name) or {}).get("status") or {}
    return next((c for c in status.get("conditions", []) if c.get("type") == kind), None)


def requests(emulator: StatefulEmulator, method: str, path_end: str, watch: bool | None = None) -> list[float]:
    return [t for t, m, p, w in emulator.seen if m == method and p.endswith(path_end)
            and (watch is None or w == watch)]


def on_first_event(rt: Any, reason: str, action: Callable[[], None]) -> threading.Event:
    """Run `action` in the handler thread when the operator posts its first `reason` Event."""
    done = threading.Event()
    original = rt.post_event

    def post_event(body: Any, **kwargs: Any) -> None:
        if kwargs.get("reason") == reason and not done.is_set():
            done.set()
            action()
        original(body, **kwargs)

    rt.post_event = post_event
    return done


# ---- 410 Gone ---------------------------------------------------------------------------------
async def test_watch_410_gone_makes_kopf_list_again_and_events_still_arrive(cluster: Api, operator) -> None:
    rt, handle = operator
    await cluster.create(index("gone"))
    await eventually(phase(cluster, "gone", "Healthy", 1), 60, "Healthy")
    lists = len(requests(cluster.emulator, "GET", "/embeddingindexes", watch=False))
    await cluster.emulator.expire_watches()  # ERROR 410 Expired in every open watch stream
    await eventually(lambda: len(requests(cluster.emulator, "GET", "/embeddingindexes", watch=False)) > lists,
                     20, "a fresh LIST after the 410")
    await cluster.patch("gone", {"spec": example("quickstart-v2-canary.yaml")["spec"]})
    status = await eventually(phase(cluster, "gone", "Progressing", 2), 60, "the change after the relist")
    assert status["weight"] == 25.0 and not handle.errors


# ---- 429 Retry-After --------------------------------------------------------------------------
async def test_429_retry_after_on_our_status_write_is_honoured(cluster: Api, operator) -> None:
    fault = cluster.emulator.fail("PATCH", r"/embeddingindexes/slow-down/status$", 429, times=1,
                                  headers={"Retry-After": "3"})
    await cluster.create(index("slow-down"))
    await eventually(phase(cluster, "slow-down", "Healthy", 1), 60, "Healthy after the 429")
    assert fault.hits
    later = [t for t in requests(cluster.emulator, "PATCH", "/slow-down/status") if t > fault.hits[0]]
    assert later and later[0] - fault.hits[0] >= 2.9, "the retry waited the server's Retry-After, not 0.5 s"


async def test_429_retry_after_on_kopfs_own_patch_is_honoured(cluster: Api, operator) -> None:
    fault = cluster.emulator.fail("PATCH", r"/embeddingindexes/kopf-429$", 429, times=1,
                                  headers={"Retry-After": "2"})
    await cluster.create(index("kopf-429"))
    await eventually(phase(cluster, "kopf-429", "Healthy", 1), 60, "Healthy after kopf's 429")
    later = [t for t in requests(cluster.emulator, "PATCH", "/embeddingindexes/kopf-429") if t > fault.hits[0]]
    assert later and later[0] - fault.hits[0] >= 1.9


async def test_kopf_is_configured_to_always_honour_retry_after_and_bound_requests() -> None:
    settings = kopf.OperatorSettings()
    configure_settings(settings, OperatorConfig(store_root=Path("/s"), data_dir=Path("/d"), api_timeout=7.0))
    assert settings.networking.enforce_retry_after is True
    assert settings.networking.request_timeout == 7.0 and settings.networking.connect_timeout == 7.0


# ---- 401 / 403 --------------------------------------------------------------------------------
@pytest.mark.parametrize("code,reason", [(403, "Forbidden"), (401, "Unauthorized")])
async def test_401_403_show_a_condition_and_back_off_instead_of_hot_looping(cluster: Api, operator, code: int,
                                                                            reason: str) -> None:
    rt, handle = operator
    name = f"rbac-{code}"
    fault = cluster.emulator.fail("GET", rf"/configmaps/{name}-routing$", code, times=2)
    await cluster.create(index(name))
    cond = await eventually(lambda: condition(cluster, name, "APIAccess"), 60, "the APIAccess condition")
    assert (cond["status"], cond["reason"]) == ("False", reason) and str(code) in cond["message"]
    assert "\n" not in cond["message"]
    first = fault.hits[0]
    await asyncio.sleep(2.0)
    assert [t for t in fault.hits if first < t < first + 2.0] == [], "no retry before the auth backoff"
    # once RBAC is fixed (the fault is exhausted), the next retry converges and the condition goes away
    await eventually(phase(cluster, name, "Healthy", 1), 60, "Healthy after the permission returned")
    assert condition(cluster, name, "APIAccess") is None
    assert cluster.configmap(name)["data"]["stable"] == "v1"
    assert len(fault.hits) == 2 and fault.hits[1] - fault.hits[0] >= 2.9


# ---- a hung API server ------------------------------------------------------------------------
async def test_a_hung_api_call_times_out_and_the_cycle_is_retried(cluster: Api, operator) -> None:
    fault = cluster.emulator.fail("GET", r"/configmaps/hung-routing$", 500, times=1, delay=20)
    started = time.monotonic()
    await cluster.create(index("hung"))
    await eventually(lambda: cluster.configmap("hung"), 30, "the routing ConfigMap despite a hung read")
    await eventually(phase(cluster, "hung", "Healthy", 1), 30, "Healthy")
    assert fault.hits and time.monotonic() - started < 20, "the 1.5 s timeout cut the 20 s hang short"


# ---- the lease is lost in the middle of a reconcile -------------------------------------------
async def test_after_the_lease_is_lost_mid_reconcile_nothing_more_is_written(cluster: Api, operator) -> None:
    rt, handle = operator
    lost = threading.Event()
    rt.may_write = lambda: not lost.is_set()
    built = on_first_event(rt, "ShadowBuilt", lost.set)  # the lease goes right after the build
    await cluster.create(index("deposed"))
    await eventually(built.is_set, 60, "the build")
    await asyncio.sleep(3.0)  # a cycle would have finished and written by now
    store = rt.config.store_root / NAMESPACE / "indexes" / "deposed"
    assert (store / "versions" / "v1").is_dir(), "the step in progress completed"
    assert not (cluster.get("deposed") or {}).get("status"), "no status write after the loss"
    assert cluster.configmap("deposed") is None, "no routing ConfigMap after the loss"
    from controller.store.fs import Store
    assert Store(rt.config.store_root / NAMESPACE).routing("deposed").stable is None, "no alias switch"
    assert not [e for e in cluster.events("deposed") if e["reason"] != "ShadowBuilt"]


async def test_a_lease_taken_over_stops_the_old_leader_at_once(cluster: Api) -> None:
    loop = asyncio.get_running_loop()
    a = LeaseElector(_client(cluster), NAMESPACE, "takeover", "pod-a", lease_duration=3, renew_deadline=2,
                     retry_period=0.2)
    assert await loop.run_in_executor(None, a.try_acquire_or_renew) and a.holds_lease()
    lease = cluster.emulator.body("leases", NAMESPACE, "takeover")
    # another replica took the lease (e.g. after a long GC pause of pod-a)
    await cluster._call("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/takeover",
                        {"spec": {"holderIdentity": "pod-b", "renewTime": lease["spec"]["renewTime"]}},
                        "application/merge-patch+json")
    assert not await loop.run_in_executor(None, a.try_acquire_or_renew)
    assert not a.holds_lease(), "a round that sees another holder ends writing immediately"


async def test_holds_lease_expires_after_the_renew_deadline_without_a_renewal() -> None:
    clock = [100.0]
    elector = LeaseElector.__new__(LeaseElector)  # no API needed for the local decision
    elector.renew_deadline, elector.clock = 2.0, lambda: clock[0]
    elector._held_since, elector._lost = None, False
    assert not elector.holds_lease()
    elector._mark_held(100.0)
    clock[0] = 101.9
    assert elector.holds_lease()
    clock[0] = 102.0
    assert not elector.holds_lease(), "stop writing before lease_duration lets a standby in"


# ---- a SIGKILLed leader -----------------------------------------------------------------------
LEADER_SCRIPT = """
import sys, threading
from kubernetes import client
from controller.operator.leader import LeaseElector
conf = client.Configuration(); conf.host = sys.argv[1]
elector = LeaseElector(client.ApiClient(conf), sys.argv[2], "killed", "pod-a", lease_duration=3,
                       renew_deadline=2, retry_period=0.3)
stop = threading.Event()
assert elector.wait_for_leadership(stop)
print("leader", flush=True)
elector.keep_renewing(stop, lambda: None)
"""


def _client(cluster: Api) -> Any:
    conf = kubernetes.client.Configuration()
    conf.host = cluster.url
    return kubernetes.client.ApiClient(conf)


async def test_a_sigkilled_leader_is_replaced_after_the_lease_duration(cluster: Api) -> None:
    loop = asyncio.get_running_loop()
    proc = subprocess.Popen([sys.executable, "-c", LEADER_SCRIPT, cluster.url, NAMESPACE], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = await loop.run_in_executor(None, proc.stdout.readline)
        assert line.strip() == "leader"
        standby = LeaseElector(_client(cluster), NAMESPACE, "killed", "pod-b", lease_duration=3, renew_deadline=2,
                               retry_period=0.2)
        await asyncio.sleep(1.0)
        assert not await loop.run_in_executor(None, standby.try_acquire_or_renew), "pod-a renews: pod-b waits"
        os.kill(proc.pid, signal.SIGKILL)  # no release: the lease stays with pod-a until it expires
        killed = time.monotonic()
        await loop.run_in_executor(None, proc.wait, 10)
        stop = threading.Event()
        acquired = await asyncio.wait_for(loop.run_in_executor(None, standby.wait_for_leadership, stop), 20)
        waited = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert acquired and standby.holds_lease()
    assert cluster.emulator.body("leases", NAMESPACE, "killed")["spec"]["holderIdentity"] == "pod-b"
    # the last renewal was at most retry_period before the kill: expiry 2.7-3 s later (+ one standby round)
    assert 2.0 <= waited <= 3 + 0.2 + 2.0, waited


# ---- deletion during a reconcile --------------------------------------------------------------
async def test_deletion_during_a_reconcile_finishes_the_cycle_then_finalizes(cluster: Api, operator) -> None:
    rt, handle = operator
    loop = asyncio.get_running_loop()
    on_first_event(rt, "ShadowBuilt",
                   lambda: asyncio.run_coroutine_threadsafe(cluster.delete("doomed"), loop).result(10))
    await cluster.create(index("doomed"))
    await eventually(lambda: cluster.get("doomed") is None, 60, "the finalizer after the in-flight cycle")
    assert cluster.configmap("doomed") is None
    assert "IndexRetained" in {e["reason"] for e in cluster.events("doomed")}
    assert not handle.errors


async def test_delete_and_recreate_during_a_reconcile_never_writes_the_old_cycle_to_the_new_object(
        cluster: Api, operator, caplog: pytest.LogCaptureFixture) -> None:
    rt, handle = operator
    loop = asyncio.get_running_loop()
    old_uid: list[str] = []

    async def recreate() -> None:
        old_uid.append(cluster.get("phoenix")["metadata"]["uid"])
        await cluster.delete("phoenix")  # the finalizer holds it...
        await cluster.patch("phoenix", {"metadata": {"finalizers": None}})  # ...until a forced removal
        assert cluster.get("phoenix") is None
        await cluster.create(index("phoenix", "quickstart-v2-canary.yaml"))  # a new object, same name

    on_first_event(rt, "ShadowBuilt", lambda: asyncio.run_coroutine_threadsafe(recreate(), loop).result(10))
    await cluster.create(index("phoenix"))
    status = await eventually(phase(cluster, "phoenix", "Progressing", 1), 90, "the new object's own cycle")
    new = cluster.get("phoenix")
    assert new["metadata"]["uid"] != old_uid[0]
    assert status["weight"] == 25.0, "the status is the new spec's, not the old cycle's"
    owners = [o["uid"] for o in cluster.configmap("phoenix")["metadata"]["ownerReferences"]]
    assert owners == [new["metadata"]["uid"]], "the routing ConfigMap was adopted by the new object"
    assert any("cycle abandoned" in r.getMessage() for r in caplog.records), "the old cycle's write got 409"
    assert not handle.errors


# ---- ENOSPC / EROFS on the store volume ---------------------------------------------------------
@pytest.mark.parametrize("code,reason", [(errno.ENOSPC, "StoreFull"), (errno.EROFS, "StoreReadOnly")])
async def test_a_full_or_read_only_store_volume_is_a_condition(cluster: Api, operator, monkeypatch, code: int,
                                                               reason: str) -> None:
    rt, handle = operator
    failing = threading.Event()
    failing.set()
    attempts: list[float] = []

    def broken(original: Callable[..., Any]) -> Callable[..., Any]:
        def write(path: Path, *args: Any, **kwargs: Any) -> Any:
            if failing.is_set():
                attempts.append(time.monotonic())
                raise OSError(code, os.strerror(code), str(path))
            return original(path, *args, **kwargs)
        return write

    for name in ("write_bytes", "write_json", "write_npy", "append_line"):
        if hasattr(atomic, name):
            monkeypatch.setattr(atomic, name, broken(getattr(atomic, name)))
    name = f"disk-{reason.lower()}"
    await cluster.create(index(name))
    cond = await eventually(lambda: condition(cluster, name, "StoreWritable"), 60, "the StoreWritable condition")
    assert (cond["status"], cond["reason"]) == ("False", reason)
    assert ("full" if code == errno.ENOSPC else "read-only") in cond["message"] and "\n" not in cond["message"]
    assert cluster.get(name)["status"]["phase"] == "Stalled"
    first = attempts[0]
    await asyncio.sleep(2.0)
    assert not [t for t in attempts if first + 0.5 < t < first + 2.0], "no retry before the store backoff"
    failing.clear()  # space freed / volume remounted
    await eventually(phase(cluster, name, "Healthy", 1), 60, "Healthy once the store is writable")
    assert condition(cluster, name, "StoreWritable") is None
    assert not handle.errors
