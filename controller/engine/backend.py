"""The engine's one way to a version's vectors: which backend holds them, and how to reach it.

A version's meta.json records its backend (``index.backend``: type and parameters, never
credentials); versions written before backends existed have none and are the default backend's.
Everything here speaks the VectorBackend protocol only (backends/base.py).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np

from controller.backends import get_backend, has_native_alias
from controller.backends.base import BackendSettings, OpenVersion, VectorBackend, VersionRef
from controller.errors import InvalidInput, NotFound
from controller.manifest.models import DEFAULT_BACKEND
from controller.store.fs import Store


def settings_of(spec: Any) -> BackendSettings:
    """``spec.index.backend`` of a manifest as the backend sees it."""
    kind, params = spec.index.backend_settings()
    return BackendSettings(kind, params)


def backend_of_spec(spec: Any) -> VectorBackend:
    return get_backend(spec.index.backend_settings()[0])


def validate_backend(spec: Any, source: Any = None) -> None:
    """Unknown type or bad parameters: one line naming the field, before anything is written."""
    try:
        settings = settings_of(spec)
        get_backend(settings.type).validate(settings, spec.model.dim, spec.index.metric)
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, file=source, field=exc.field, value=exc.value) from exc


def recorded_settings(meta: dict[str, Any]) -> BackendSettings:
    """The backend a stored version was built on (old versions: the default one, with their factory)."""
    recorded = meta["index"].get("backend") or {"type": DEFAULT_BACKEND, "factory": meta["index"]["factory"]}
    params = {k: v for k, v in recorded.items() if k != "type"}
    return BackendSettings(str(recorded["type"]), params)


def backend_of(meta: dict[str, Any]) -> VectorBackend:
    return get_backend(recorded_settings(meta).type)


def version_ref(store: Store, name: str, version: str, meta: dict[str, Any] | None = None) -> VersionRef:
    meta = meta if meta is not None else store.meta(name, version)
    return VersionRef(index=name, version=version, dim=int(meta["index"]["dim"]), metric=meta["index"]["metric"],
                      fingerprint=_fingerprint_key(meta["fingerprint"]), location=store.version_dir(name, version))


def new_version_ref(name: str, version: str, spec: Any, location: Any) -> VersionRef:
    return VersionRef(index=name, version=version, dim=int(spec.model.dim), metric=spec.index.metric,
                      fingerprint=_fingerprint_key(spec.model.fingerprint()), location=location)


def _fingerprint_key(fingerprint: dict[str, Any]) -> str:
    from controller.store.queries import fingerprint_key

    return fingerprint_key(fingerprint)


def open_version(store: Store, name: str, version: str, meta: dict[str, Any] | None = None) -> OpenVersion:
    meta = meta if meta is not None else store.meta(name, version)
    return backend_of(meta).open_version(version_ref(store, name, version, meta))


@contextlib.contextmanager
def opened(store: Store, name: str, version: str) -> Iterator[OpenVersion]:
    version_handle = open_version(store, name, version)
    try:
        yield version_handle
    finally:
        version_handle.close()


def stored_vectors(store: Store, name: str, version: str) -> np.ndarray:
    """Every row's raw vector of a stored version (drift, reports, reuse), in ids.json order."""
    with opened(store, name, version) as handle:
        return np.asarray(handle.vectors())


def delete_partial_versions(store: Store, name: str, spec: Any) -> list[str]:
    """Versions the backend holds for ``name`` that the store does not know: crashed builds."""
    backend = backend_of_spec(spec)
    known = {v.id for v in store.versions(name)}
    removed = []
    for version in backend.list_versions(name):
        if version not in known:
            backend.delete_version(new_version_ref(name, version, spec, None))
            removed.append(version)
    return removed


def delete_stored_version(store: Store, name: str, version: str) -> None:
    """The store's record first (a version without meta.json is invisible), then the backend's copy."""
    meta = store.meta(name, version)
    ref = version_ref(store, name, version, meta)
    store.delete_version(name, version)
    backend_of(meta).delete_version(ref)


def sync_alias(store: Store, name: str, spec: Any = None, previous: str | None = None) -> None:
    """Point the native alias of the backend holding the stable version at it (the store's record is the
    truth). The manifest's backend and the backend of the ``previous`` stable version, when they do not
    hold the stable version (the backend just changed), keep no alias: it must never name another version."""
    stable = store.routing(name).stable
    holder = _type_of(store, name, stable)
    if holder is not None and has_native_alias(holder):
        _point_alias(get_backend(holder), name, stable)
    others = {spec.index.backend_settings()[0] if spec is not None else None, _type_of(store, name, previous)}
    # a backend whose alias is the store's routing record has none to move: it is not even imported
    for kind in sorted(k for k in others - {holder, None} if has_native_alias(k)):
        _point_alias(get_backend(kind), name, None)


def _type_of(store: Store, name: str, version: str | None) -> str | None:
    if version is None:
        return None
    try:
        return recorded_settings(store.meta(name, version)).type
    except NotFound:  # a previous stable version collected since: its backend was cleaned then
        return None


def _point_alias(backend: VectorBackend, name: str, version: str | None) -> None:
    if backend.get_alias(name) != version:
        backend.set_alias(name, version)
