"""The read path: routed versions loaded once and kept, one search function for every shell.

`controller serve` and `controller query` both go through `VersionPool` and
`search`. Nothing is reloaded per query: a version's opened vectors (the backend's
OpenVersion; the embedded backend memory-maps its index where it can), its ids and its query embedder are loaded the
first time the version is routed and kept while it is routed, plus a grace
period so that a rollback finds it still warm.

Following the alias: the pool reads each index's routing record and, when it
changed (mtime, size or content), loads any newly routed version *before*
publishing a new `RoutedIndex` snapshot. Publishing is one attribute
assignment (atomic under the GIL), so a request that already took a snapshot
finishes on the version it started on, and a request never sees a routed
version that is still loading. The pool never writes to the store.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, NamedTuple

import numpy as np

from controller.backends.base import OpenVersion
from controller.core.routing import bucket, choose_version
from controller.core.types import Routing
from controller.embed import fingerprint_key, make_embedder
from controller.engine.backend import open_version
from controller.engine.embedders import stored_embedder
from controller.errors import Conflict, ControllerError, InvalidInput, NotFound, NotReady
from controller.manifest.providers import capabilities
from controller.store.fs import Store
from controller.store.queries import fingerprint_key as short_key

log = logging.getLogger("controller.serve")

#: Largest k a search may ask for: bounds the work and the response size of one request.
MAX_K = 1000
#: Seconds an unrouted version stays loaded (a quick rollback finds it warm).
DEFAULT_GRACE_S = 60.0
#: Seconds between two looks at the routing records when no file event arrives.
DEFAULT_POLL_S = 0.5


class Hit(NamedTuple):
    # a tuple, not a frozen dataclass: k of them are made per query and a frozen
    # dataclass __init__ (object.__setattr__ per field) costs several times more
    id: str
    score: float
    rank: int


@dataclass
class LoadedVersion:
    """Everything one version needs to answer a query, loaded once."""

    name: str
    version: str
    meta: dict[str, Any]
    index: OpenVersion
    ids: list[str]
    text_embedder: Any | None  # None: the version takes vectors only
    mmapped: bool

    @property
    def fingerprint(self) -> dict[str, Any]:
        return self.meta["fingerprint"]

    @cached_property
    def model_key(self) -> str:
        """The short fingerprint key clients send with vectors (same as the query reservoir key).

        Cached: it hashes the canonical JSON of the fingerprint, which cost more than the search
        of a small index when it ran twice per query; meta never changes while the version is loaded.
        """
        return short_key(self.fingerprint)

    @property
    def metric(self) -> str:
        return self.meta["index"]["metric"]

    @property
    def dim(self) -> int:
        return int(self.meta["index"]["dim"])

    def embed_text(self, text: str) -> np.ndarray:
        if self.text_embedder is None:
            raise InvalidInput(
                f"{self.name}/{self.version} serves precomputed vectors and its manifest declares no "
                "spec.model.queryEmbedder: send {vector, model} instead of query text",
                field="query", value=None)
        return np.asarray(self.text_embedder.embed_queries(["query"], [text]), dtype=np.float32)

    def search(self, vector: np.ndarray, k: int) -> list[Hit]:
        scores, rows = self.index.search(vector, k)
        ids = self.ids
        # tolist(): plain ints and floats at once instead of a numpy scalar and a conversion per hit
        row_list, score_list = rows[0].tolist(), scores[0].tolist()  # arrays, by the backend protocol
        if -1 not in row_list:  # the rule: k results, no padding (row -1), built without a loop in Python
            return list(map(Hit, [ids[row] for row in row_list], score_list, range(1, len(row_list) + 1)))
        return [Hit(ids[row], score, r + 1) for r, (row, score) in enumerate(zip(row_list, score_list)) if row >= 0]


def load_version(store: Store, name: str, version: str) -> LoadedVersion:
    """Opened vectors (memory-mapped when the backend can), ids and the embedder for query text."""
    meta = store.meta(name, version)
    index = open_version(store, name, version, meta)
    ids = store.ids(name, version)
    return LoadedVersion(name, version, meta, index, list(ids), _text_embedder(store, name, version, meta),
                         bool(getattr(index, "mmapped", False)))


def _text_embedder(store: Store, name: str, version: str, meta: dict[str, Any]) -> Any | None:
    model = meta["model"]
    declared = model.get("queryEmbedder")
    if declared:
        try:
            return make_embedder(declared, {})
        except ControllerError as exc:
            raise ControllerError(f"cannot create the query embedder of {name}/{version}: {exc}") from exc
    if not capabilities(model["provider"]).embeds_text:
        return None  # vectors only: text gets a 422 naming the query field
    return stored_embedder(store, name, version)


@dataclass(frozen=True)
class RoutedIndex:
    """One immutable view of an index: its routing and the loaded versions it routes to."""

    name: str
    routing: Routing
    versions: dict[str, LoadedVersion]
    signature: tuple


def role_of(routing: Routing, version: str) -> str:
    return "candidate" if version == routing.candidate and version != routing.stable else "stable"


@dataclass
class SearchOutcome:
    request_id: str
    name: str
    version: str
    role: str
    model: dict[str, Any]
    model_key: str
    bucket: float | None
    hits: list[Hit]
    vector: np.ndarray
    took_ms: float
    k: int


def request_id() -> str:
    """32 random hex digits, unguessable (feedback names its request by it), as uuid4().hex was,
    without building a UUID object per query."""
    return os.urandom(16).hex()


def validate_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be an integer from 1 to {MAX_K}", field="k", value=k)
    return k


def validate_vector(vector: Any, dim: int, where: str) -> np.ndarray:
    """One finite row of the version's dimension; never a silent reshape or NaN search."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or array.shape[0] != dim:
        raise InvalidInput(f"vector has {array.size} values but {where} has {dim} dimensions",
                           field="vector", value=None)
    if not np.isfinite(array).all():
        raise InvalidInput("vector contains NaN or inf (first at position "
                           f"{int(np.argmin(np.isfinite(array)))})", field="vector", value=None)
    return array.reshape(1, -1)


def search(routed: RoutedIndex, *, text: str | None = None, vector: Any = None, model: str | None = None,
           k: int = 10, key: str | None = None, draw: float | None = None) -> SearchOutcome:
    """Route (sticky by key), embed with the routed version's own model, search its kept index."""
    started = time.perf_counter()
    k = validate_k(k)
    if (text is None) == (vector is None):
        raise InvalidInput("send exactly one of query (text) or vector", field="query", value=None)
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InvalidInput("query must be non-empty text", field="query", value=None)
    position = bucket(key) if key is not None else None  # hashed once: routing and the outcome share it
    version = choose_version(routed.routing, key=None,
                             draw=position if position is not None else
                             random.uniform(0, 100) if draw is None else draw)
    loaded = routed.versions.get(version) if version else None
    if loaded is None:
        raise NotReady(f"{routed.name} serves no version yet; run `controller reconcile` first")
    try:
        query = _query_vector(loaded, text, vector, model)
    except (InvalidInput, Conflict) as exc:
        exc.version, exc.role = version, role_of(routed.routing, version)  # lets the service attribute it
        raise
    hits = loaded.search(query, k)
    return SearchOutcome(request_id(), routed.name, version, role_of(routed.routing, version),
                         loaded.fingerprint, loaded.model_key, position, hits, query,
                         (time.perf_counter() - started) * 1000, k)


def search_version(routed: RoutedIndex, version: str, *, text: str | None = None, vector: Any = None,
                   model: str | None = None, k: int = 10) -> SearchOutcome:
    """Search one named loaded version, whatever the weight (mirroring and interleaving use this)."""
    started = time.perf_counter()
    loaded = routed.versions.get(version)
    if loaded is None:
        raise NotReady(f"{routed.name}/{version} is not loaded")
    query = _query_vector(loaded, text, vector, model)
    hits = loaded.search(query, k)
    return SearchOutcome(request_id(), routed.name, version, role_of(routed.routing, version),
                         loaded.fingerprint, loaded.model_key, None, hits, query,
                         (time.perf_counter() - started) * 1000, k)


def _query_vector(loaded: LoadedVersion, text: str | None, vector: Any, model: str | None) -> np.ndarray:
    """The query in the routed version's space: its own embedder for text, a same-model vector as is."""
    if vector is None:
        return loaded.embed_text(text or "")
    where = f"{loaded.name}/{loaded.version}"
    if model is None:
        raise InvalidInput(f"a vector needs model: the fingerprint key of its space ({loaded.model_key} for "
                           f"{where})", field="model")
    if model != loaded.model_key:
        raise Conflict(f"the vector's model {model!r} is not the model of the routed version {where} "
                       f"({loaded.model_key}: {fingerprint_key(loaded.fingerprint)}); vectors of two spaces "
                       "are never mixed")
    return validate_vector(vector, loaded.dim, where)


class VersionPool:
    """Routed versions of the served indexes, kept loaded and following the routing records."""

    def __init__(self, store: Store, indexes: list[str] | None = None, *, grace_s: float = DEFAULT_GRACE_S,
                 poll_s: float = DEFAULT_POLL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.only = list(indexes) if indexes else None
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.clock = clock
        self._routed: dict[str, RoutedIndex] = {}  # replaced whole, never mutated
        self._loaded: dict[tuple[str, str], LoadedVersion] = {}
        self._retired: dict[tuple[str, str], float] = {}  # unrouted since (monotonic)
        self._errors: dict[str, str] = {}
        self._lock = threading.Lock()  # one refresher at a time; readers never take it
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None

    # ---- reading (request path: no lock, no I/O) -------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._routed)

    def routed(self, name: str) -> RoutedIndex:
        routed = self._routed.get(name)
        if routed is None:
            if name in self._served_names():
                raise NotReady(f"{name} is not loaded yet"
                               + (f": {self._errors[name]}" if name in self._errors else ""))
            raise NotFound(f"no index named {name!r} is served (served: {', '.join(self.names()) or 'none'})")
        if routed.routing.stable is None and routed.routing.candidate is None:
            raise NotReady(f"{name} serves no version yet; run `controller reconcile` first")
        return routed

    def ready(self) -> tuple[bool, dict[str, str]]:
        """Ready when every served index has each routed version loaded; else why not, per index."""
        why: dict[str, str] = {}
        names = self._served_names()
        if not names:
            why["*"] = f"the store {self.store.root} has no index yet"
        for name in names:
            routed = self._routed.get(name)
            if routed is None:
                why[name] = self._errors.get(name, "not loaded yet")
                continue
            if routed.signature != self._signature(name):
                why[name] = self._errors.get(name, "a newly routed version is loading")
            # an index that routes nothing yet is ready (its searches get 503 + Retry-After): one
            # unbuilt index must not take the others out of service
        return not why, why

    def snapshot(self, name: str) -> RoutedIndex | None:
        """The published view of one index, or None before its first load."""
        return self._routed.get(name)

    def loaded_versions(self) -> list[tuple[str, str]]:
        return sorted(self._loaded)

    # ---- following the routing records --------------------------------------------------------
    def refresh(self) -> bool:
        """Load what the routing records now route to and publish new snapshots; True when any changed."""
        with self._lock:
            changed = False
            for name in self._served_names():
                try:
                    changed |= self._refresh_one(name)
                    self._errors.pop(name, None)
                except (ControllerError, OSError, RuntimeError, ValueError, KeyError) as exc:
                    # keep serving the last good snapshot; /readyz reports the reason
                    self._errors[name] = f"{type(exc).__name__}: {exc}"
                    log.warning("cannot load the routed versions of %s: %s", name, exc)
            self._unload_expired()
            return changed

    def _served_names(self) -> list[str]:
        return self.only if self.only is not None else self.store.indexes()

    def _signature(self, name: str) -> tuple:
        path = self.store.index_dir(name) / "routing.json"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return ("absent", self.store.index_dir(name).is_dir())
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _refresh_one(self, name: str) -> bool:
        signature = self._signature(name)
        current = self._routed.get(name)
        if current is not None and current.signature == signature:
            return False
        if not self.store.index_dir(name).is_dir():
            if self.only is None:
                self._routed = {n: r for n, r in self._routed.items() if n != name}
                return True
            raise NotFound(f"no index named {name!r} in the store {self.store.root}")
        routing = self.store.routing(name)
        wanted = [v for v in (routing.stable, routing.candidate) if v]
        versions = {}
        for version in wanted:
            loaded = self._loaded.get((name, version))
            if loaded is None:
                started = time.perf_counter()
                loaded = load_version(self.store, name, version)
                self._loaded[(name, version)] = loaded
                log.info("loaded %s/%s in %.0f ms (%s)", name, version, (time.perf_counter() - started) * 1000,
                         "memory-mapped" if loaded.mmapped else "read into memory")
            self._retired.pop((name, version), None)
            versions[version] = loaded
        now = self.clock()
        for key in self._loaded:
            if key[0] == name and key[1] not in versions:
                self._retired.setdefault(key, now)
        published = RoutedIndex(name, routing, versions, signature)
        self._routed = {**self._routed, name: published}  # the atomic swap
        return True

    def _unload_expired(self) -> None:
        """Drop versions unrouted for longer than the grace period; in-flight requests hold their own
        reference, so they finish even if the pool lets go."""
        now = self.clock()
        for key, since in list(self._retired.items()):
            if now - since >= self.grace_s:
                self._retired.pop(key)
                self._loaded.pop(key, None)
                log.info("unloaded %s/%s (unrouted for %.0f s)", key[0], key[1], now - since)

    def start(self) -> None:
        """Follow the routing records in the background: file events when watchdog can, else polling."""
        if self._thread is not None:
            return
        self._watch()
        self._thread = threading.Thread(target=self._run, name="version-pool", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _watch(self) -> None:
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
        except ImportError:
            return  # polling alone still follows the records
        wake = self._wake

        class _Wake(FileSystemEventHandler):
            def on_any_event(self, event: Any) -> None:
                if str(getattr(event, "src_path", "")).endswith("routing.json") or \
                        str(getattr(event, "dest_path", "")).endswith("routing.json"):
                    wake.set()

        root = self.store.root / "indexes"
        if not root.is_dir():
            return
        try:
            observer = Observer()
            observer.schedule(_Wake(), str(root), recursive=True)
            observer.daemon = True
            observer.start()
            self._observer = observer
        except OSError as exc:  # e.g. inotify watch limit: polling continues
            log.warning("file watch unavailable (%s); polling every %.1f s", exc, self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._observer is not None:
            self._observer.stop()
        if self._thread is not None:
            self._thread.join(timeout=5)
