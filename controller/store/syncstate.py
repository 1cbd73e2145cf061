"""What GitOps mode records in the store, and how `status` reads it back.

    <store>/gitops/sources/<key>.json    per Git source: the branch head last fetched,
                                         the commit last applied, the last error
    <store>/indexes/<name>/sync.json     per index: the commit and manifest digest applied
    <store>/indexes/<name>/suspend.json  present while `controller suspend NAME` holds it

Plain JSON written with temp + fsync + rename like the rest of the store, so a
crash never leaves half a record and `cat` shows it. Only files, no engine: the
GitOps shells write these records, and `controller status` (which must start fast)
reads them. Suspending is the engine's (engine.suspend), which owns the flag.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.stamps import utc_stamp
from controller.store.flags import suspension
from controller.store import atomic
from controller.store.fs import Store

__all__ = ["SYNC_FILE", "index_sync", "read_source_state", "source_state_path", "sync_state", "utc_now",
           "write_index_sync", "write_source_state"]

SYNC_FILE = "sync.json"


utc_now = utc_stamp


def source_state_path(store: Store, key: str) -> Path:
    return store.root / "gitops" / "sources" / f"{key}.json"


def read_source_state(store: Store, key: str) -> dict[str, Any]:
    return atomic.read_json(source_state_path(store, key)) or {}


def write_source_state(store: Store, key: str, **fields: Any) -> dict[str, Any]:
    """Merge `fields` into the source state (read-modify-write; one sync loop per source)."""
    state = {**read_source_state(store, key), **fields}
    atomic.write_json(source_state_path(store, key), state)
    return state


def index_sync(store: Store, name: str) -> dict[str, Any] | None:
    return atomic.read_json(store.index_dir(name) / SYNC_FILE)


def write_index_sync(store: Store, name: str, record: dict[str, Any]) -> None:
    if index_sync(store, name) != record:  # one write per change, like status.json
        atomic.write_json(store.index_dir(name) / SYNC_FILE, record)


# ---- what status shows -----------------------------------------------------------------

def sync_state(store: Store, name: str) -> dict[str, Any] | None:
    """The Git sync state of one index, or None when no sync ever applied it.

    `inSync` is False when the branch head last fetched is not the applied
    commit: the branch moved and the new commit is not applied yet (a sync has
    not run, the new manifests are invalid, a reconcile failed, or the index is
    suspended). Read-only and offline: it reports the head the last sync saw.
    """
    applied = index_sync(store, name)
    if applied is None:
        return None
    source = read_source_state(store, applied.get("source", ""))
    head = source.get("head") or applied["commit"]
    suspended = suspension(store, name) is not None
    error = (source.get("indexErrors") or {}).get(name) or source.get("error")
    live = (store.status(name) or {}).get("observedManifestDigest")
    by_hand = live is not None and live != applied.get("manifestDigest")
    in_sync = head == applied["commit"] and not by_hand
    if by_hand:
        # someone ran `controller reconcile` with other manifests after the sync applied its commit
        message = (f"out of sync: reconciled from another manifest (digest {live}) after "
                   f"{applied['commit'][:12]} was applied; the next sync restores the branch's manifest")
    elif in_sync:
        message = f"in sync with {applied['branch']} at {applied['commit'][:12]}"
    else:
        message = (f"out of sync: {applied['branch']} is at {head[:12]}, applied {applied['commit'][:12]}")
        if suspended:
            message += " (suspended: run `controller resume " + name + "`)"
        elif error:
            message += f" (last error: {error})"
    if applied.get("orphaned"):
        message += (f"; its manifest was deleted at {applied['orphaned'][:12]}, the index keeps serving "
                    "(sync with --prune to delete it)")
    return {**applied, "head": head, "inSync": in_sync, "suspended": suspended,
            "error": None if in_sync else error, "fetchedAt": source.get("fetchedAt"), "message": message}
