"""Manual operations outside the manifest: rollback and roll forward.

A manual move holds the version it moved away from, so the next reconcile of
an unchanged manifest does not silently undo it (like `kubectl argo rollouts
abort`). Changing the manifest, or `rollback --to` that version, releases it.

Only versions whose checks passed are rollback targets, as for the store.
`--force` overrides that for one named version: the move is journaled with
`forced: true` and the routing and status show the forced version while it serves.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from controller.core import reasons as R
from controller.core.types import Routing, VersionInfo
from controller.engine.backend import sync_alias
from controller.engine.reconcile import journal_record
from controller.engine.status import persist_status, utc_now
from controller.errors import ControllerError, InvalidInput, NotFound
from controller.inputs import validate_version
from controller.store.fs import Store, print_lock_wait, unroutable_reason


def rollback(store: Store, name: str, to: str | None = None, *, force: bool = False,
             lock_timeout: float | None = None, on_lock_wait=print_lock_wait) -> dict[str, Any]:
    """Move the alias by hand; `force` (with `to`) routes a version that has no passing verdict."""
    if force and to is None:
        raise InvalidInput("--force needs --to VERSION: only a named version can be forced", field="--force")
    if to is not None:
        validate_version(to, field="--to")
    store.require_index(name)
    with store.lock(timeout=lock_timeout, on_wait=on_lock_wait):
        routing = store.routing(name)
        versions = {v.id: v for v in store.versions(name)}
        new, message, forced = _target_routing(name, routing, versions, to, force)
        alias = store.routing_record(name).get("alias", name)
        if new == routing and not forced:  # `--to` what already serves alone: nothing to journal
            return {"index": name, "alias": alias, "unchanged": True,
                    "message": f"{name} already serves {routing.stable} alone; nothing to do"}
        record = journal_record(name, alias, routing, new, R.MANUAL_ROLLBACK, message,
                                manifest_digest=None, source="controller rollback",
                                extra={"forced": True} if forced else None)
        store.commit_transition(name, routing=(alias, new), journal=record, forced=forced)
        persist_status(store, name, manual=message, extra={"lastManualChange": record["time"]})
        # the store's routing is the truth and is written first: a backend that fails here is synced
        # again by the next reconcile
        sync_alias(store, name, previous=routing.stable)
    return record


def _target_routing(name: str, routing: Routing, versions: dict[str, VersionInfo],
                    to: str | None, force: bool = False) -> tuple[Routing, str, dict[str, Any]]:
    if to is not None:
        return _to_version(name, routing, versions, to, force)
    if routing.candidate is not None:
        held = _hold(routing.held, routing.candidate)
        return (replace(routing, candidate=None, weight=0.0, held=held),
                f"manual rollback: candidate {routing.candidate} withdrawn ({routing.weight:g}% -> 0%), "
                f"alias stays on {routing.stable}", {})
    previous = _previous_stable(routing, versions)
    if previous is None:
        raise ControllerError(f"nothing to roll back to: {name} has no earlier version that passed its "
                              "gates (see `controller history`)")
    return (Routing(stable=previous, candidate=None, weight=0.0, held=_hold(routing.held, routing.stable)),
            f"manual rollback: alias moved from {routing.stable} to {previous}", {})


def _to_version(name: str, routing: Routing, versions: dict[str, VersionInfo], to: str,
                force: bool) -> tuple[Routing, str, dict[str, Any]]:
    if to not in versions:
        raise NotFound(f"{name} has no version {to!r}; kept versions: {', '.join(versions) or 'none'}")
    v = versions[to]
    refusal = unroutable_reason({"verdict": v.verdict, "message": v.verdict_message} if v.verdict else None)
    held = tuple(h for h in _hold(routing.held, routing.stable) if h != to)
    target = Routing(stable=to, candidate=None, weight=0.0, held=held)
    message = f"manual rollback: alias moved from {routing.stable} to {to}"
    if refusal is None:
        return target, message, {}
    if not force:
        raise ControllerError(f"refusing to route {name} to {to}: {refusal}. `--force` routes it anyway "
                              "(journaled and shown in status)")
    message += f" (FORCED: {refusal})"
    return target, message, {to: {"at": utc_now(), "reason": refusal}}


def _hold(held: tuple[str, ...], version: str | None) -> tuple[str, ...]:
    return held if version is None or version in held else (*held, version)


def _previous_stable(routing: Routing, versions: dict[str, VersionInfo]) -> str | None:
    """The newest version older than stable whose gates passed."""
    if routing.stable not in versions:
        return None
    current = versions[routing.stable]
    older = [v for v in versions.values() if v.created < current.created and v.verdict == "passed"]
    return max(older, key=lambda v: v.created).id if older else None

