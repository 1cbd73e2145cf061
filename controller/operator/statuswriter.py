"""Writing .status: one merge patch on the status subresource per cycle, skipped when unchanged.

Why not kopf's `patch` argument: kopf applies it after the handler, outside the
handler's error handling. An API error there (a 409 Conflict, a 5xx beyond the
client's retries) kills a timer for good (kopf 1.45) and loses the cycle of a
change handler until the next event. Written here, a failed write is an
ordinary exception in the handler: kopf retries it with backoff, on every
trigger, so the operator stays level-based.
"""

from __future__ import annotations

from typing import Any, Protocol

from controller.manifest.crd import GROUP, PLURAL, VERSION


def without_nulls(value: Any) -> Any:
    """What the server stores after a merge patch: keys set to null are gone."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def status_changed(current: dict[str, Any] | None, new: dict[str, Any]) -> bool:
    return without_nulls(current or {}) != without_nulls(new)


class StatusWriter(Protocol):
    def write(self, body: dict[str, Any], status: dict[str, Any]) -> bool: ...


class KubeStatusWriter:
    def __init__(self, api_client: Any, timeout: float = 30.0) -> None:
        from kubernetes import client  # operator extra

        self._api = client.CustomObjectsApi(api_client)
        self._timeout = timeout  # a hung API server fails this write (retried) instead of blocking the cycle

    def write(self, body: dict[str, Any], status: dict[str, Any]) -> bool:
        """Patch the status when it differs from the one in `body`; True when a write happened."""
        if not status_changed(body.get("status"), status):
            return False
        meta = body["metadata"]
        # Keys that vanished from the new status are nulled so the merge patch removes them.
        gone = {k: None for k in (body.get("status") or {}) if k not in status}
        # metadata.uid is a precondition: if the resource was deleted and recreated under the same
        # name during the cycle, the server answers 409 instead of giving the new object our status
        patch = {"status": {**gone, **status}}
        if meta.get("uid"):
            patch["metadata"] = {"uid": meta["uid"]}
        self._api.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], PLURAL, meta["name"], patch,
            _content_type="application/merge-patch+json", _request_timeout=self._timeout)
        return True


class MemoryStatusWriter:
    """For unit tests: remembers what would have been written."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, dict[str, Any]]] = []

    def write(self, body: dict[str, Any], status: dict[str, Any]) -> bool:
        if not status_changed(body.get("status"), status):
            return False
        self.writes.append((body["metadata"]["name"], status))
        return True
