"""An index left out of rbac.routingConfigMapIndexes can still be deleted.

The chart then restricts ConfigMap get/patch/delete by resourceNames, so every call on the
index's `<index>-routing` ConfigMap is 403. The finalizer's removal must not hold the deletion
forever: nothing of ours can be deleted, and a ConfigMap that does exist is garbage-collected
through its ownerReference.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import pytest

from controller.operator.handlers import OperatorConfig
from tests.operator.conftest import Api, cluster, eventually, example, operator  # noqa: F401
from tests.operator.conftest import operator_config as base_config  # noqa: F401
from tests.operator.kmock_state import StatefulEmulator


@pytest.fixture
def operator_config(base_config: OperatorConfig) -> OperatorConfig:
    return replace(base_config, auth_backoff=3.0, store_full_backoff=3.0, api_timeout=1.5)


def conditions(api: Api, name: str) -> list[dict[str, Any]]:
    return ((api.get(name) or {}).get("status") or {}).get("conditions", [])


@pytest.mark.asyncio
@pytest.mark.kmock(cls=StatefulEmulator)
async def test_an_index_whose_configmap_is_forbidden_is_deleted(cluster: Api, operator, caplog) -> None:
    fault = cluster.emulator.fail("GET", r"/configmaps/unlisted-routing$", 403, times=10_000)
    body = example("quickstart-v1.yaml")
    body["metadata"]["name"] = "unlisted"
    await cluster.create(body)
    await eventually(lambda: any(c["type"] == "APIAccess" for c in conditions(cluster, "unlisted")), 60,
                     "the APIAccess condition")
    caplog.set_level(logging.WARNING, logger="controller.operator.routing")
    await cluster.delete("unlisted")
    await eventually(lambda: cluster.get("unlisted") is None, 30, "the finalizer to let the resource go")
    assert fault.hits  # the removal did ask, and got 403
    assert cluster.configmap("unlisted") is None
    assert any("removal forbidden" in r.getMessage() for r in caplog.records)


def test_remove_returns_on_403_and_raises_other_errors() -> None:
    kubernetes = pytest.importorskip("kubernetes")
    from controller.operator.routing import KubePublisher

    class Core:
        def __init__(self, status: int) -> None:
            self.status = status

        def read_namespaced_config_map(self, *a: Any, **kw: Any) -> Any:
            raise kubernetes.client.exceptions.ApiException(status=self.status)

    publisher = KubePublisher.__new__(KubePublisher)
    publisher._t = {}
    publisher._core = Core(403)
    publisher.remove("search", "unlisted")  # no exception: the finalizer completes
    publisher._core = Core(404)
    publisher.remove("search", "unlisted")
    publisher._core = Core(500)
    with pytest.raises(kubernetes.client.exceptions.ApiException):
        publisher.remove("search", "unlisted")
