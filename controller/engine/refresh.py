"""In-place refresh under the same model: the facts core/refresh.py decides on, and the backend call.

The decision is pure (core/refresh.py); this module observes (ids and hashes of the stable
version, the backend's answer whether it can update that version in place, the chain of
refreshes since its last full build) and writes the refreshed version through the backend's
``InPlaceUpdate`` methods inside the store's staging discipline (store.write_version).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from controller.backends.base import InPlaceUpdate
from controller.core.refresh import RefreshFacts, RefreshPolicy, RowChanges, row_changes
from controller.core.types import Desired, Routing, VersionInfo
from controller.engine import backend as B
from controller.manifest.reembed import rebuild_after_seconds
from controller.stamps import parse_stamp
from controller.store.fs import Store


def policy_of(spec: Any) -> RefreshPolicy | None:
    """spec.reembed.refresh/rebuildAfter for the pure decision (None: a corpus change is a rebuild)."""
    reembed = spec.reembed
    if reembed is None or reembed.refresh != "inPlace":
        return None
    after = reembed.rebuild_after
    if isinstance(after, str):
        return RefreshPolicy(True, rebuild_after_seconds=rebuild_after_seconds(after), rebuild_after=after)
    return RefreshPolicy(True, rebuild_after_refreshes=after, rebuild_after="" if after is None else str(after))


def wants_facts(desired: Desired, versions: tuple[VersionInfo, ...], routing: Routing,
                corpus_digest: str | None) -> bool:
    """The plan may refresh the stable version: in-place asked, and no version of the label fits the corpus."""
    if desired.refresh is None or routing.stable is None:
        return False
    stable = next((v for v in versions if v.id == routing.stable), None)
    if stable is None or stable.label != desired.label:
        return False
    return not any(v.label == desired.label and v.corpus_digest == corpus_digest for v in versions)


def observe_refresh(store: Store, name: str, spec: Any, desired: Desired, versions: tuple[VersionInfo, ...],
                    routing: Routing, corpus: Any) -> RefreshFacts | None:
    """What changed between the stable version and ``corpus``, and whether its backend can refresh it."""
    if corpus is None or not wants_facts(desired, versions, routing, corpus.digest):
        return None
    base = str(routing.stable)
    changes = changes_of(store, name, base, corpus)
    meta = store.meta(name, base)
    chain = chain_of(base, meta)
    return RefreshFacts(base=base, added=changes.added, changed=changes.changed, removed=changes.removed,
                        kept=len(changes.keep), blocker=blocker(store, name, base, meta, spec),
                        refreshes=chain.refreshes, full_build_at=chain.full_build_at,
                        full_build=chain.full_build)


@dataclass(frozen=True)
class Chain:
    """The in-place refreshes that led to a version since its last full build (meta.json's ``refresh``)."""

    refreshes: int
    full_build: str
    full_build_at: float


def chain_of(version: str, meta: dict[str, Any]) -> Chain:
    """``version``'s chain; a version not made by a refresh is its own full build, at its creation."""
    chain = meta.get("refresh") or {}
    return Chain(refreshes=int(chain.get("refreshes", 0)), full_build=str(chain.get("fullBuild") or version),
                 full_build_at=float(chain.get("fullBuildAt") or epoch(meta["created"])))


def changes_of(store: Store, name: str, base: str, corpus: Any) -> RowChanges:
    return row_changes(store.ids(name, base), store.hashes(name, base), corpus.ids, corpus.hashes)


def blocker(store: Store, name: str, base: str, meta: dict[str, Any], spec: Any) -> str | None:
    """Why ``base`` cannot be refreshed in place under this manifest, or None."""
    settings, wanted = B.recorded_settings(meta), B.settings_of(spec)
    if settings != wanted:
        return f"{base} was built on backend {settings.type} {dict(settings.params)}, the manifest asks for " \
               f"{wanted.type} {dict(wanted.params)}"
    backend = B.get_backend(settings.type)
    if not backend.capabilities.in_place_update:
        return f"backend {settings.type} cannot update a version in place"
    return cast(InPlaceUpdate, backend).in_place_blocker(settings, B.version_ref(store, name, base, meta))


def epoch(stamp: str) -> float:
    """meta.json's `created` (ISO 8601, Z) as seconds since the epoch."""
    return parse_stamp(stamp).timestamp()


class TailRows:
    """Rows ``offset..`` of a refreshed version, indexable like the full array by those row numbers.

    Corpus drift compares only the new and changed documents, which are the refreshed version's last
    rows, so the kept rows are never loaded for it.
    """

    def __init__(self, offset: int, fresh: np.ndarray) -> None:
        self.offset = offset
        self.fresh = fresh

    def __getitem__(self, rows: Any) -> np.ndarray:
        return self.fresh[np.asarray(rows, dtype=np.int64) - self.offset]


def write_refreshed(store: Store, name: str, version: str, spec: Any, base: str, changes: RowChanges,
                    fresh: np.ndarray, ids: list[str], hashes: list[str], meta: dict[str, Any],
                    extra_files: dict[str, Any]) -> None:
    """The refreshed version: the backend writes its rows into the store's staging directory."""
    settings = B.settings_of(spec)
    backend = cast(InPlaceUpdate, B.get_backend(settings.type))
    base_ref = B.version_ref(store, name, base)

    def fill(location: Any) -> None:
        begun = time.monotonic()
        ref = B.new_version_ref(name, version, spec, location)
        backend.refresh_version(ref, settings, base_ref, np.asarray(changes.keep, dtype=np.int64), fresh,
                                ids=ids, content_hashes=hashes)
        meta["build"]["buildSeconds"] = round(time.monotonic() - begun, 3)  # meta.json is written last

    store.write_version(name, version, fill=fill, ids=ids, hashes=hashes, meta=meta, extra_files=extra_files)
