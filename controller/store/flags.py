"""Per-index flag files that several layers read: kept apart so reading one imports no engine."""

from __future__ import annotations

from typing import Any

from controller.store import atomic
from controller.store.fs import Store

SUSPEND_FILE = "suspend.json"  # <store>/indexes/<name>/suspend.json, present while suspended


def suspension(store: Store, name: str) -> dict[str, Any] | None:
    """The `controller suspend` record of an index, or None when it is not suspended."""
    return atomic.read_json(store.index_dir(name) / SUSPEND_FILE)
