"""Manual operations outside the manifest: rollback and roll forward.

A manual move holds the version it moved away from, so the next reconcile of
an unchanged manifest does not silently undo it (like `kubectl argo rollouts
abort`). Changing the manifest, or `rollback --to` that version, releases it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.core import reasons as R
from controller.core.types import Routing, VersionInfo
from controller.engine.reconcile import journal_record
from controller.engine.status import persist_status
from controller.errors import ControllerError, NotFound
from controller.store.fs import Store


def rollback(store: Store, name: str, to: str | None = None) -> dict[str, Any]:
    store.require_index(name)
    with store.lock():
        routing = store.routing(name)
        versions = {v.id: v for v in store.versions(name)}
        new, message = _target_routing(name, routing, versions, to)
        alias = store.routing_record(name).get("alias", name)
        record = journal_record(name, alias, routing, new, R.MANUAL_ROLLBACK, message,
                                manifest_digest=None, source="controller rollback")
        store.write_routing(name, alias, new)
        store.append_journal(name, record)
        persist_status(store, name, manual=message, extra={"lastManualChange": record["time"]})
    return record


def _target_routing(name: str, routing: Routing, versions: dict[str, VersionInfo],
                    to: str | None) -> tuple[Routing, str]:
    if to is not None:
        return _to_version(name, routing, versions, to)
    if routing.candidate is not None:
        held = _hold(routing.held, routing.candidate)
        return (replace(routing, candidate=None, weight=0.0, held=held),
                f"manual rollback: candidate {routing.candidate} withdrawn ({routing.weight:g}% -> 0%), "
                f"alias stays on {routing.stable}")
    previous = _previous_stable(routing, versions)
    if previous is None:
        raise ControllerError(f"nothing to roll back to: {name} has no earlier version that passed its "
                              "gates (see `controller history`)")
    return (Routing(stable=previous, candidate=None, weight=0.0, held=_hold(routing.held, routing.stable)),
            f"manual rollback: alias moved from {routing.stable} to {previous}")


def _to_version(name: str, routing: Routing, versions: dict[str, VersionInfo], to: str) -> tuple[Routing, str]:
    if to not in versions:
        raise NotFound(f"{name} has no version {to!r}; kept versions: {', '.join(versions) or 'none'}")
    if versions[to].verdict == "failed":
        raise ControllerError(f"refusing to route {name} to {to}: it failed its gates "
                              f"({versions[to].verdict_message})")
    held = tuple(h for h in _hold(routing.held, routing.stable) if h != to)
    return (Routing(stable=to, candidate=None, weight=0.0, held=held),
            f"manual rollback: alias moved from {routing.stable} to {to}")


def _hold(held: tuple[str, ...], version: str | None) -> tuple[str, ...]:
    return held if version is None or version in held else (*held, version)


def _previous_stable(routing: Routing, versions: dict[str, VersionInfo]) -> str | None:
    """The newest version older than stable whose gates passed (or that served before)."""
    if routing.stable not in versions:
        return None
    current = versions[routing.stable]
    older = [v for v in versions.values() if v.created < current.created and v.verdict != "failed"]
    return max(older, key=lambda v: v.created).id if older else None

