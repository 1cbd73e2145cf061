"""The embedder of a stored version, recreated from its meta.json, cached for one cycle.

engine.checks (golden queries at check time) and engine.drift (query drift)
both need it; keeping it here is what lets neither import the other.
A stored version is immutable, so within one cycle (one reconcile, one CLI
call) its embedder can be built once and reused.
"""

from __future__ import annotations

from pathlib import Path

from controller.embed import Embedder, make_embedder
from controller.errors import CheckError, ControllerError
from controller.store.fs import Store


def stored_embedder(store: Store, name: str, version: str) -> Embedder:
    """The embedder a stored version was built with, independent of today's manifest."""
    d = store.version_dir(name, version)
    meta = store.meta(name, version)
    paths: dict[str, Path] = {"vectors": d / "vectors.npy"}
    if (d / "queries" / "vectors.npy").is_file():
        paths["queryVectors"] = d / "queries" / "vectors.npy"
        paths["queryIds"] = d / "queries" / "ids.txt"
    try:
        return make_embedder(meta["model"], paths)
    except ControllerError as exc:
        raise CheckError(f"cannot recreate the embedder of {name}/{version}: {exc}") from exc


class EmbedderCache:
    """Stored embedders of one cycle, keyed by (store, index, version): built once, then reused."""

    def __init__(self) -> None:
        self._items: dict[tuple[str, str, str], Embedder] = {}

    def get(self, store: Store, name: str, version: str) -> Embedder:
        key = (str(store.root), name, version)
        if key not in self._items:
            self._items[key] = stored_embedder(store, name, version)
        return self._items[key]
