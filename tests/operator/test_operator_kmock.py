"""The real kopf operator, in-process, against the stateful kmock Kubernetes emulator.

The scenario follows a user: apply an index (a real FAISS build of the quickstart
corpus), change the rollout percentage, apply a model that fails its golden
gate, delete the resource. A second test injects API faults (409 conflicts,
500s, dropped watches) and shows the level-based operator converges anyway.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import asyncio
import socket
import threading
import urllib.error
import urllib.request

from controller.operator.handlers import OperatorConfig
from controller.operator.main import OperatorOptions, run
from tests.operator.conftest import NAMESPACE, Api, eventually, example, wire
from tests.operator.kmock_state import StatefulEmulator

pytestmark = [pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)]


def phase(api: Api, name: str, wanted: str, generation: int | None = None):
    def check():
        body = api.get(name) or {}
        status = body.get("status") or {}
        ok = status.get("phase") == wanted
        if generation is not None:
            ok = ok and status.get("observedGeneration") == generation
        return status if ok else None
    return check


async def test_lifecycle_create_weight_rollback_delete(cluster: Api, operator, tmp_path: Path) -> None:
    rt, _ = operator
    await cluster.create(example("quickstart-v1.yaml", **{"indexops.dev/on-delete": "delete"}))
    status = await eventually(phase(cluster, "quickstart", "Healthy", 1), 15, "v1 Healthy")
    assert status["stable"]["version"] == "v1" and status.get("candidate") is None
    ready = {c["type"]: c for c in status["conditions"]}["Ready"]
    assert ready["status"] == "True" and ready["observedGeneration"] == 1
    assert {g["metric"] for g in status["gates"]} >= {"ndcg@10", "recall@10"}
    assert all(g["value"] is not None and g["threshold"] is not None for g in status["gates"])
    cm = await eventually(lambda: cluster.configmap("quickstart"), 10, "routing ConfigMap")
    assert cm["data"]["stable"] == "v1" and cm["data"]["weight"] == "0"
    assert cm["metadata"]["ownerReferences"][0]["kind"] == "EmbeddingIndex"
    assert "indexops.dev/finalizer" in cluster.get("quickstart")["metadata"]["finalizers"]
    reasons = {e["reason"] for e in cluster.events("quickstart")}
    assert "ShadowBuilt" in reasons

    # A new model at 25%: built, checked, weighted.
    canary = example("quickstart-v2-canary.yaml")
    await cluster.patch("quickstart", {"spec": canary["spec"]})
    status = await eventually(phase(cluster, "quickstart", "Progressing", 2), 60, "v2 at 25%")
    assert (status["candidate"]["version"], status["weight"]) == ("v2", 25.0)

    # Only the percentage changes: the weight follows, nothing is rebuilt.
    await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 60}}})
    status = await eventually(phase(cluster, "quickstart", "Progressing", 3), 30, "weight 60")
    assert status["weight"] == 60.0 and status["versions"] == ["v1", "v2"]
    await eventually(lambda: cluster.configmap("quickstart")["data"]["weight"] == "60", 10, "ConfigMap weight")
    metrics = rt.metrics.exposition().decode()
    assert 'embeddingindex_candidate_weight_percent{name="quickstart",namespace="search"} 60.0' in metrics
    assert "embeddingindex_gate_value{" in metrics and "embeddingindex_reconcile_duration_seconds" in metrics

    await cluster.patch("quickstart", {"spec": {"rollout": {"percentage": 100}}})
    status = await eventually(phase(cluster, "quickstart", "Healthy", 4), 30, "v2 stable")
    assert status["stable"]["version"] == "v2"
    assert "AliasSwitched" in {e["reason"] for e in cluster.events("quickstart")}

    # v3 squeezes features into 64 buckets: its golden gates fail, it is rolled back.
    bad = example("quickstart-v3.yaml")
    await cluster.patch("quickstart", {"spec": bad["spec"]})
    status = await eventually(phase(cluster, "quickstart", "RolledBack", 5), 60, "v3 rolled back")
    assert status["stable"]["version"] == "v2" and status.get("candidate") is None
    degraded = {c["type"]: c for c in status["conditions"]}["Degraded"]
    assert degraded["status"] == "True" and degraded["reason"] == "GateFailed"
    assert "v3 rolled back: ndcg@10" in degraded["message"], degraded["message"]
    assert "< min 0.500" in degraded["message"], degraded["message"]  # measured value and threshold
    failed = [g for g in status["gates"] if not g["passed"]]
    assert failed and all(g["value"] < g["threshold"] for g in failed if g["kind"] == "min")
    warnings = [e for e in cluster.events("quickstart") if e["type"] == "Warning"]
    assert {"GateFailed", "RolledBack"} <= {e["reason"] for e in warnings}
    assert any("min" in e["message"] for e in warnings if e["reason"] == "GateFailed")
    assert cluster.configmap("quickstart")["data"]["stable"] == "v2"

    # Delete: the finalizer removes the versions (annotation on-delete=delete) and the ConfigMap.
    index_dir = rt.config.store_root / NAMESPACE / "indexes" / "quickstart"
    assert index_dir.is_dir()
    await cluster.delete("quickstart")
    await eventually(lambda: cluster.get("quickstart") is None, 30, "the finalizer to release the resource")
    assert not index_dir.exists()
    assert cluster.configmap("quickstart") is None
    assert "IndexDeleted" in {e["reason"] for e in cluster.events("quickstart")}


async def test_invalid_spec_is_a_permanent_error_with_a_stalled_status(cluster: Api, operator) -> None:
    body = example("quickstart-v1.yaml")
    body["metadata"]["name"] = "broken"
    body["spec"]["corpus"]["path"] = "data/missing.jsonl"
    await cluster.create(body)
    status = await eventually(phase(cluster, "broken", "Stalled"), 30, "Stalled")
    stalled = {c["type"]: c for c in status["conditions"]}["Stalled"]
    assert "spec.corpus.path" in stalled["message"] and "missing.jsonl" in stalled["message"]
    assert "EmbeddingIndex search/broken" in stalled["message"]
    # Fixing the spec recovers without a restart.
    await cluster.patch("broken", {"spec": {"corpus": {"path": "data/corpus.jsonl"}}})
    await eventually(phase(cluster, "broken", "Healthy"), 60, "Healthy after the fix")


async def test_converges_despite_conflicts_server_errors_and_dropped_watches(cluster: Api, operator) -> None:
    rt, _ = operator
    emulator = cluster.emulator
    status_path = r"/embeddingindexes/faulty/status$"
    emulator.fail("PATCH", status_path, 500, times=2)   # retried inside kopf's API client
    emulator.fail("PATCH", status_path, 409, times=1)   # surfaces: the timer/next event redoes it
    emulator.fail("PATCH", r"/embeddingindexes/faulty$", 409, times=1)
    body = example("quickstart-v1.yaml")
    body["metadata"]["name"] = "faulty"
    await cluster.create(body)
    await eventually(phase(cluster, "faulty", "Healthy", 1), 60, "Healthy despite faults")

    # The API server "restarts": every watch ends and the next two watch attempts fail with 500.
    emulator.fail("GET", r"/embeddingindexes$", 500, times=2, watch=True)
    await emulator.drop_watches()
    canary = example("quickstart-v2-canary.yaml")
    await cluster.patch("faulty", {"spec": canary["spec"]})
    status = await eventually(phase(cluster, "faulty", "Progressing", 2), 90, "v2 at 25% after the drop")
    assert status["weight"] == 25.0
    injected = {(path.rsplit("/", 1)[-1], code) for _, path, code in emulator.injected}
    assert {("status", 500), ("status", 409), ("faulty", 409)} <= injected
    assert ("embeddingindexes", 500) in injected

    # Level-based: the timer re-reconciles with no event at all.
    def cycles() -> float:
        return sum(s.value for m in rt.metrics.reconciles.collect() for s in m.samples
                   if s.name.endswith("_total") and s.labels["name"] == "faulty")
    before = cycles()
    await eventually(lambda: cycles() > before, 3 * rt.config.interval + 5, "a timer cycle")

    # Delete without the annotation: the versions are retained in the store.
    await cluster.delete("faulty")
    await eventually(lambda: cluster.get("faulty") is None, 30, "the finalizer")
    assert (rt.config.store_root / NAMESPACE / "indexes" / "faulty" / "versions" / "v2").is_dir()
    assert "IndexRetained" in {e["reason"] for e in cluster.events("faulty")}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http_status(port: int, path: str) -> int:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2).status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_only_the_lease_holder_reconciles_and_a_standby_takes_over(
        cluster: Api, operator_config: OperatorConfig) -> None:
    """`controller operator --leader-elect` as two replicas sharing one store: the process entry point."""
    loop = asyncio.get_running_loop()
    replicas = {}
    for identity in ("pod-a", "pod-b"):
        rt, registry, api = wire(cluster, operator_config)
        options = OperatorOptions(namespaces=(NAMESPACE,), leader_elect=True, lease_name="eic",
                                  lease_namespace=NAMESPACE, lease_duration=3, renew_deadline=2,
                                  identity=identity, health_port=_free_port())
        stop, codes = threading.Event(), []
        thread = threading.Thread(target=lambda rt=rt, options=options, registry=registry, api=api, stop=stop,
                                  codes=codes: codes.append(run(rt, options, registry=registry, api_client=api,
                                                                stop=stop)), daemon=True)
        replicas[identity] = (rt, options, stop, thread, codes)
        thread.start()
        if identity == "pod-a":
            await eventually(rt.ready.is_set, 20, "pod-a to lead and start")

    a_rt, a_opts, a_stop, a_thread, a_codes = replicas["pod-a"]
    b_rt, b_opts, b_stop, b_thread, b_codes = replicas["pod-b"]
    try:
        await cluster.create(example("quickstart-v1.yaml") | {"metadata": {"name": "ha", "namespace": NAMESPACE}})
        await eventually(phase(cluster, "ha", "Healthy", 1), 60, "Healthy via the leader")
        assert cluster.emulator.body("leases", NAMESPACE, "eic")["spec"]["holderIdentity"] == "pod-a"
        assert not b_rt.ready.is_set()  # the standby waits for the lease and reconciles nothing
        assert "embeddingindex_reconcile_total{" not in b_rt.metrics.exposition().decode()
        assert await loop.run_in_executor(None, _http_status, a_opts.health_port, "/readyz") == 200
        assert await loop.run_in_executor(None, _http_status, b_opts.health_port, "/readyz") == 503
        assert await loop.run_in_executor(None, _http_status, b_opts.health_port, "/healthz") == 200

        a_stop.set()  # a rolling update stops the leader: it releases the lease on the way out
        await loop.run_in_executor(None, a_thread.join, 30)
        assert a_codes == [0]
        await eventually(b_rt.ready.is_set, 20, "pod-b to take over")
        canary = example("quickstart-v2-canary.yaml")
        await cluster.patch("ha", {"spec": canary["spec"]})
        status = await eventually(phase(cluster, "ha", "Progressing", 2), 60, "v2 at 25% via the new leader")
        assert status["weight"] == 25.0
        assert "embeddingindex_reconcile_total{" in b_rt.metrics.exposition().decode()
    finally:
        for _, _, stop, thread, _ in replicas.values():
            stop.set()
        for _, _, _, thread, _ in replicas.values():
            await loop.run_in_executor(None, thread.join, 30)
