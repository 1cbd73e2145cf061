"""The routing record in the cluster: one ConfigMap per index, owned by the resource.

Query routers (a sidecar, an ingress plugin, the `controller query` verb) read
`<name>-routing` in the index's namespace: alias -> stable, candidate, weight, and the
mirror and interleave shares of a stepped rollout (the store's routing record).
The ConfigMap is owned by the EmbeddingIndex, so Kubernetes garbage-collects it
with the resource; the finalizer also deletes it explicitly.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

from controller.core.types import Routing

log = logging.getLogger("controller.operator.routing")


def configmap_name(name: str) -> str:
    return f"{name}-routing"


def routing_record(status: dict[str, Any], routing: Routing | None = None) -> dict[str, str]:
    """ConfigMap data: flat keys for shell consumers, JSON for programs.

    `routing` is the store's routing record, what `controller serve` reads: besides stable, candidate
    and weight it carries the mirror and interleave shares of a stepped rollout and the held versions,
    so a router fed from the ConfigMap mirrors and interleaves like the service. Without it (no store
    at hand) the status's stable/candidate/weight, with both shares 0."""
    if routing is None:
        routing = Routing(stable=(status.get("stable") or {}).get("version"),
                          candidate=(status.get("candidate") or {}).get("version"),
                          weight=float(status.get("weight") or 0.0))
    alias = str(status.get("alias") or "")
    record = {"alias": status.get("alias"), "stable": routing.stable, "candidate": routing.candidate,
              "weight": routing.weight, "mirror": routing.mirror, "interleave": routing.interleave,
              "held": list(routing.held)}
    return {
        "alias": alias,
        "stable": routing.stable or "",
        "candidate": routing.candidate or "",
        "weight": f"{routing.weight:g}",
        "mirror": f"{routing.mirror:g}",
        "interleave": f"{routing.interleave:g}",
        "routing.json": json.dumps(record, sort_keys=True),
    }


class RoutingPublisher(Protocol):
    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None: ...
    def remove(self, namespace: str, name: str, owner_uid: str | None = None) -> None: ...


class NullPublisher:
    """For runs without cluster access to ConfigMaps (the status still carries the routing)."""

    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None:
        return None

    def remove(self, namespace: str, name: str, owner_uid: str | None = None) -> None:
        return None


MANAGED_BY = "embedding-index-controller"
INDEX_LABEL = "indexops.dev/index"


def routing_labels(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/managed-by": MANAGED_BY, INDEX_LABEL: name}


def is_ours(configmap_labels: dict[str, str] | None, name: str) -> bool:
    """Label-scoped ownership: RBAC cannot limit ConfigMap verbs by label, so the code does.

    A ConfigMap that merely has the `<index>-routing` name (a user's, another tool's) is
    never patched or deleted."""
    labels = configmap_labels or {}
    return labels.get("app.kubernetes.io/managed-by") == MANAGED_BY and labels.get(INDEX_LABEL) == name


class ForeignConfigMap(RuntimeError):
    """A ConfigMap with the routing name exists but is not ours: not overwritten."""


class KubePublisher:
    """Create-or-patch the ConfigMap with the official client; unchanged data is not written.

    Only ConfigMaps labelled as ours for that index are patched or deleted; a patch carries the
    resourceVersion it read and a delete carries uid and resourceVersion preconditions, so a
    ConfigMap replaced in between is never clobbered."""

    def __init__(self, api_client: Any, timeout: float = 30.0) -> None:
        from kubernetes import client  # operator extra

        self._client = client
        self._core = client.CoreV1Api(api_client)
        self._t = {"_request_timeout": timeout}  # per call: a hung API server fails the cycle, not hangs it

    def publish(self, namespace: str, name: str, owner: dict[str, Any], data: dict[str, str]) -> None:
        from kubernetes.client.exceptions import ApiException

        cm_name = configmap_name(name)
        try:
            current = self._core.read_namespaced_config_map(cm_name, namespace, **self._t)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = {"apiVersion": "v1", "kind": "ConfigMap", "data": data,
                    "metadata": {"name": cm_name, "namespace": namespace, "ownerReferences": [owner],
                                 "labels": routing_labels(name)}}
            self._core.create_namespaced_config_map(namespace, body, **self._t)
            return
        meta = current.metadata
        if not is_ours(meta.labels, name):
            raise ForeignConfigMap(f"ConfigMap {namespace}/{cm_name} exists and is not managed by {MANAGED_BY} "
                                   f"(labels app.kubernetes.io/managed-by={MANAGED_BY}, {INDEX_LABEL}={name} "
                                   "missing); not overwriting it: rename or delete it")
        owners = [o.uid for o in (meta.owner_references or [])]
        if (current.data or {}) == data and owner.get("uid") in owners:
            return
        # ours, maybe from a deleted-and-recreated resource of the same name: adopt it
        patch = {"metadata": {"resourceVersion": meta.resource_version, "ownerReferences": [owner]}, "data": data}
        self._core.patch_namespaced_config_map(cm_name, namespace, patch,
                                               _content_type="application/merge-patch+json", **self._t)

    def remove(self, namespace: str, name: str, owner_uid: str | None = None) -> None:
        """Delete the index's ConfigMap, unless it is not ours or (with `owner_uid`) owned by another object."""
        from kubernetes.client.exceptions import ApiException

        cm_name = configmap_name(name)
        try:
            current = self._core.read_namespaced_config_map(cm_name, namespace, **self._t)
            if not is_ours(current.metadata.labels, name):
                return  # someone else's ConfigMap of that name: leave it
            owners = [o.uid for o in (current.metadata.owner_references or [])]
            if owner_uid and owners and owner_uid not in owners:
                return  # adopted by a recreated resource of the same name: the deleted one's finalizer keeps off
            preconditions = self._client.V1Preconditions(uid=current.metadata.uid,
                                                         resource_version=current.metadata.resource_version)
            self._core.delete_namespaced_config_map(cm_name, namespace, **self._t,
                                                    body=self._client.V1DeleteOptions(preconditions=preconditions))
        except ApiException as exc:
            if exc.status == 403:
                _forbidden_removal(namespace, cm_name)
                return
            if exc.status != 404:
                raise


def _forbidden_removal(namespace: str, cm_name: str) -> None:
    """403 on the index's ConfigMap is what rbac.routingConfigMapIndexes does to an index it does not
    list, so no ConfigMap of ours can have been created (publish reads before it creates) and none may
    be deleted. One left from when the index was listed carries the ownerReference: the garbage
    collector removes it with the resource. Raising would hold the finalizer, and the deletion, forever."""
    log.warning("ConfigMap %s/%s: removal forbidden (403; index not in rbac.routingConfigMapIndexes?); "
                "leaving it to the garbage collector through its ownerReference", namespace, cm_name)


def owner_reference(body: dict[str, Any]) -> dict[str, Any]:
    meta = body.get("metadata", {})
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "name": meta.get("name"),
            "uid": meta.get("uid"), "controller": True, "blockOwnerDeletion": False}
