"""`controller suspend` / `resume`: hold an index out of sync and watch, and say so in its status.

The flag is a file in the store (<store>/indexes/<name>/suspend.json) so it works
without a commit while the branch keeps moving. Both verbs end in
engine.status.persist_status, so `status` shows Suspended at once, and after a
resume Pending until the next pass applies the manifest.
"""

from __future__ import annotations

from typing import Any

from controller.engine.status import SUSPEND_FILE, persist_status, suspension, utc_now
from controller.store import atomic
from controller.store.fs import Store

__all__ = ["SUSPEND_FILE", "resume", "suspend", "suspension"]


def suspend(store: Store, name: str, reason: str = "") -> dict[str, Any]:
    """Hold an index: sync and watch skip it until resume(). The index must exist."""
    store.require_index(name)
    record = {"suspended": True, "since": utc_now(), "reason": reason}
    # No store lock: suspend is the brake during a long sync and must not wait for it. A reconcile
    # persisting its status concurrently reads the flag too, so either order ends Suspended.
    atomic.write_json(store.index_dir(name) / SUSPEND_FILE, record)
    persist_status(store, name)
    return record


def resume(store: Store, name: str) -> bool:
    """Release an index; returns whether it was suspended."""
    store.require_index(name)
    path = store.index_dir(name) / SUSPEND_FILE
    if not path.exists():
        return False
    path.unlink()
    atomic.fsync_dir(path.parent)
    persist_status(store, name, resumed=(f"resumed: the next sync, watch or reconcile pass applies "
                                        f"the manifest of {name}"))
    return True
