"""Where the store lives when nobody says: one rule for every verb and the Python API.

`--store DIR`, then `$CONTROLLER_STORE`, then a per-user state directory
(`$XDG_STATE_HOME/embedding-index-controller`, by default
`~/.local/state/embedding-index-controller`). The default depends on neither
the current directory nor the manifest's, so `controller reconcile m.yaml`
followed by `controller status` agree from any directory, and vectors never
land in a Git working tree unless a flag or the environment puts them there.
"""

from __future__ import annotations

import os
from pathlib import Path

STORE_ENV = "CONTROLLER_STORE"
STATE_ENV = "XDG_STATE_HOME"
APP_DIR = "embedding-index-controller"


def default_store_path() -> Path:
    """The per-user default store: $XDG_STATE_HOME/embedding-index-controller (~/.local/state/...)."""
    base = os.environ.get(STATE_ENV) or str(Path.home() / ".local" / "state")
    return Path(base) / APP_DIR


def store_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """--store, then $CONTROLLER_STORE, then default_store_path(). Only None means "not given": an empty
    --store (an unset shell variable) is refused, never quietly another store."""
    if explicit is not None:
        return given_store_path(explicit)
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV])
    return default_store_path()


def given_store_path(explicit: str | os.PathLike[str]) -> Path:
    """The store the caller named; an empty or blank name is InvalidInput naming --store."""
    if not str(os.fspath(explicit)).strip():
        from controller.errors import InvalidInput  # light, but this module is imported at every start-up

        raise InvalidInput(f"names no directory; pass a store directory, or leave --store out to use {store_help()}",
                           field="--store", value=os.fspath(explicit))
    return Path(explicit)


def store_help() -> str:
    return f"${STORE_ENV}, else ${STATE_ENV}/{APP_DIR} (~/.local/state/{APP_DIR})"
