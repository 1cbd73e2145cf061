"""The routing record in the cluster: one ConfigMap per index, owned by the resource.

Query routers (a sidecar, an ingress plugin, the `controller query` verb) read
`<name>-routing` in the index's namespace: alias -> stable, candidate, weight.
The ConfigMap is owned by the EmbeddingIndex, so Kubernetes garbage-collects it
with the resource; the finalizer also deletes it explicitly.
"""

from __future__ import annotations

import json
from typing import Any, Protocol


def configmap_name(name: str) -> str:
    return f"{name}-routing"


def routing_record(status: dict[str, Any]) -> dict[str, str]:
    """ConfigMap data from the status: flat keys for shell consumers, JSON for programs."""
    stable = (status.get("stable") or {}).get("version")
    candidate = (status.get("candidate") or {}).get("version")
    weight = float(status.get("weight") or 0.0)
    record = {"alias": status.get("alias"), "stable": stable, "candidate": candidate, "weight": weight}
    return {
        "alias": str(status.get("alias") or ""),
        "stable": stable or "",
        "candidate": candidate or "",
        "weight": f"{weight:g}",
        "routing.json": json.dumps(record, sort_keys=True),
    }


class RoutingPublisher(Protocol):
    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None: ...
    def remove(self, namespace: str, name: str) -> None: ...


class NullPublisher:
    """For runs without cluster access to ConfigMaps (the status still carries the routing)."""

    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None:
        return None

    def remove(self, namespace: str, name: str) -> None:
        return None


class KubePublisher:
    """Create-or-patch the ConfigMap with the official client; unchanged data is not written."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client  # operator extra

        self._core = client.CoreV1Api(api_client)

    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None:
        from kubernetes.client.exceptions import ApiException

        cm_name = configmap_name(name)
        try:
            current = self._core.read_namespaced_config_map(cm_name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                    "metadata": {"name": cm_name, "namespace": namespace, "ownerReferences": [owner],
                                 "labels": {"app.kubernetes.io/managed-by": "embedding-index-controller",
                                            "indexops.dev/index": name}}}
            self._core.create_namespaced_config_map(namespace, body)
            return
        if (current.data or {}) == data:
            return
        self._core.patch_namespaced_config_map(cm_name, namespace, {"data": data},
                                               _content_type="application/merge-patch+json")

    def remove(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.delete_namespaced_config_map(configmap_name(name), namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta.get("name"),
            "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": False}
