"""Declarative lifecycle controller for vector-search indexes under embedding drift.

The public Python API (the same functions the CLI verbs call)::

    from controller import open_store, load_manifests, plan, reconcile, status, get, rollback, wait

    store = open_store("out/store")              # or None: $CONTROLLER_STORE, else the per-user default
    results = reconcile("examples/quickstart/v1.yaml", store)
    print(status("quickstart", store)["phase"])

Names load on first use (PEP 562), so `import controller` stays cheap and
`controller --version` does not pay for numpy, the vector index library or pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "open_store": "controller.api",
    "load_manifests": "controller.api",
    "plan": "controller.api",
    "reconcile": "controller.api",
    "unhealthy": "controller.api",
    "status": "controller.api",
    "get": "controller.api",
    "rollback": "controller.api",
    "history": "controller.api",
    "promote": "controller.api",
    "abort": "controller.api",
    "retry": "controller.api",
    "wait": "controller.api",
    "WaitFor": "controller.api",
    "WaitResult": "controller.api",
    "Store": "controller.store.fs",
    "Hooks": "controller.engine.reconcile",
    "IndexResult": "controller.engine.reconcile",
    "LoadedManifest": "controller.manifest.load",
    "ControllerError": "controller.errors",
    "InvalidInput": "controller.errors",
    "NotFound": "controller.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on demand
    from controller.api import (WaitFor, WaitResult, abort, get, history, load_manifests, open_store, plan,
                                promote, retry,
                                reconcile, rollback, status, unhealthy, wait)
    from controller.engine.reconcile import Hooks, IndexResult
    from controller.errors import ControllerError, InvalidInput, NotFound
    from controller.manifest.load import LoadedManifest
    from controller.store.fs import Store


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'controller' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
