"""Vector backends behind one protocol (base.py), found by ``spec.index.backend.type``.

The registry maps a type name to the module that implements it; the module is
imported on first use, so `controller status` never loads a database client.
Adding a backend = one module with a class satisfying ``VectorBackend`` plus one
line in ``_MODULES`` (see docs/backends.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from controller.errors import InvalidInput

if TYPE_CHECKING:
    from controller.backends.base import VectorBackend

#: type -> "module:Class"
_MODULES: dict[str, str] = {
    "faiss": "controller.backends.faiss:FaissBackend",
    "pgvector": "controller.backends.pgvector:PgvectorBackend",
    "qdrant": "controller.backends.qdrant:QdrantBackend",
}
#: types whose alias is the store's own routing record (their ``capabilities.native_alias`` is false),
#: known without importing the module: a no-op reconcile then loads no backend at all
_STORE_ALIAS: set[str] = {"faiss"}
_instances: dict[str, VectorBackend] = {}


def register(type_name: str, target: str, *, native_alias: bool = True) -> None:
    """Make ``type_name`` resolvable to ``target`` ("package.module:Class"); plug-ins call this.

    ``native_alias`` must equal the class's ``capabilities.native_alias``."""
    _MODULES[type_name] = target
    _instances.pop(type_name, None)
    if native_alias:
        _STORE_ALIAS.discard(type_name)
    else:
        _STORE_ALIAS.add(type_name)


def known_types() -> list[str]:
    return sorted(_MODULES)


def has_native_alias(type_name: str) -> bool:
    """Whether ``type_name`` keeps an alias of its own that must follow the store's routing."""
    return type_name not in _STORE_ALIAS


def get_backend(type_name: str) -> VectorBackend:
    """The (shared) backend instance for ``type_name``; InvalidInput names the field when unknown."""
    if type_name not in _MODULES:
        raise InvalidInput(f"unknown vector backend {type_name!r}; known: {', '.join(known_types())}",
                           field="spec.index.backend.type", value=type_name)
    if type_name not in _instances:
        module_name, _, class_name = _MODULES[type_name].partition(":")
        cls = getattr(importlib.import_module(module_name), class_name)
        _instances[type_name] = cls()
    return _instances[type_name]
