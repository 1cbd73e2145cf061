"""Fixtures: the stateful kmock emulator and the real operator running against it in a thread."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator

import pytest

kopf = pytest.importorskip("kopf")
kmock = pytest.importorskip("kmock")
pytest_asyncio = pytest.importorskip("pytest_asyncio")
kubernetes = pytest.importorskip("kubernetes")
import aiohttp  # noqa: E402
import yaml  # noqa: E402

from controller.operator.handlers import OperatorConfig, Runtime, build_registry  # noqa: E402
from controller.operator.main import OperatorOptions, OperatorThread, start_in_thread  # noqa: E402
from controller.operator.routing import KubePublisher  # noqa: E402
from controller.operator.statuswriter import KubeStatusWriter  # noqa: E402
from tests.operator.kmock_state import StatefulEmulator  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "kubernetes"
DATA_DIR = REPO / "examples" / "quickstart"  # the examples' paths are data/... relative to it
NAMESPACE = "search"
EIDX = "/apis/indexops.dev/v1alpha1/namespaces/{ns}/embeddingindexes"


def example(name: str, **annotations: str) -> dict[str, Any]:
    body = yaml.safe_load((EXAMPLES / name).read_text())
    body["metadata"]["namespace"] = NAMESPACE
    body["metadata"]["annotations"] = {**body["metadata"].get("annotations", {}), **annotations}
    return body


def declare_resources(emulator: Any) -> None:
    info = kmock.ResourceInfo
    emulator.resources["indexops.dev/v1alpha1/embeddingindexes"] = info(
        kind="EmbeddingIndex", singular="embeddingindex", namespaced=True, subresources={"status"},
        shortnames={"eidx"}, verbs={"get", "list", "watch", "create", "update", "patch", "delete"})
    emulator.resources["v1/configmaps"] = info(kind="ConfigMap", singular="configmap", namespaced=True,
                                               verbs={"get", "list", "create", "patch", "delete"})
    emulator.resources["v1/events"] = info(kind="Event", singular="event", namespaced=True,
                                           verbs={"create", "list"})
    # kopf waits for these two to be discoverable even with scanning disabled (a real server has them).
    emulator.resources["v1/namespaces"] = info(kind="Namespace", singular="namespace", namespaced=False,
                                               verbs={"list", "watch"})
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", singular="customresourcedefinition", namespaced=False,
        verbs={"list", "watch"})
    emulator.resources["coordination.k8s.io/v1/leases"] = info(kind="Lease", singular="lease", namespaced=True,
                                                               verbs={"get", "create", "update"})


class Api:
    """What a user (kubectl) does, over HTTP against the emulator."""

    def __init__(self, emulator: StatefulEmulator) -> None:
        self.emulator = emulator
        self.url = str(emulator.url).rstrip("/")

    async def _call(self, method: str, path: str, payload: Any = None, ctype: str = "application/json") -> Any:
        async with aiohttp.ClientSession() as session:
            async with session.request(method, self.url + path, data=None if payload is None else
                                       __import__("json").dumps(payload),
                                       headers={"Content-Type": ctype}) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 400:
                    raise AssertionError(f"{method} {path} -> {resp.status}: {body}")
                return body

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", EIDX.format(ns=body["metadata"]["namespace"]), body)

    async def patch(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return await self._call("PATCH", EIDX.format(ns=NAMESPACE) + f"/{name}", patch,
                                "application/merge-patch+json")

    async def delete(self, name: str) -> dict[str, Any]:
        return await self._call("DELETE", EIDX.format(ns=NAMESPACE) + f"/{name}")

    def get(self, name: str) -> dict[str, Any] | None:
        return self.emulator.body("embeddingindexes", NAMESPACE, name)

    def configmap(self, name: str) -> dict[str, Any] | None:
        return self.emulator.body("configmaps", NAMESPACE, f"{name}-routing")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for (res, ns, _), obj in self.emulator.objects.items():
            if res.plural == "events" and not obj.deleted:
                raw = obj.raw
                if raw.get("involvedObject", {}).get("name") == name:
                    out.append(copy.deepcopy(raw))
        return out


async def eventually(check: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    """Poll `check` (without blocking the emulator's event loop) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (KeyError, TypeError, AssertionError) as exc:
            last = exc
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last: {last!r}")


@pytest.fixture
def operator_config(tmp_path: Path) -> OperatorConfig:
    # Short intervals and backoffs: the same code paths as production, on a test clock.
    return OperatorConfig(store_root=tmp_path / "store", data_dir=DATA_DIR, interval=2.0, base_backoff=0.5,
                          api_backoffs=(0.1, 0.2, 0.4, 0.8), watch_timeout=30.0)


@pytest_asyncio.fixture
async def cluster(kmock: StatefulEmulator) -> AsyncIterator[Api]:
    declare_resources(kmock)
    yield Api(kmock)


def wire(cluster: Api, config: OperatorConfig) -> tuple[Runtime, Any, Any]:
    """A runtime with the real Kubernetes publisher and status writer, and a registry logged in to kmock."""
    conf = kubernetes.client.Configuration()
    conf.host = cluster.url
    api = kubernetes.client.ApiClient(conf)
    rt = Runtime(config=config, publisher=KubePublisher(api, config.api_timeout),
                 status_writer=KubeStatusWriter(api, config.api_timeout))
    registry = build_registry(rt)

    @kopf.on.login(registry=registry)
    def _login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url, insecure=True)

    return rt, registry, api


@pytest_asyncio.fixture
async def operator(cluster: Api, operator_config: OperatorConfig) -> AsyncIterator[tuple[Runtime, OperatorThread]]:
    rt, registry, _ = wire(cluster, operator_config)
    handle = start_in_thread(rt, OperatorOptions(namespaces=(NAMESPACE,)), registry=registry)
    await eventually(lambda: handle.ready_flag.is_set() or handle.errors, 20, "the operator to start")
    assert not handle.errors, handle.errors
    yield rt, handle
    await asyncio.get_running_loop().run_in_executor(None, handle.stop)
    assert not handle.errors, handle.errors
