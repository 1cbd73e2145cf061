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
import math
import os
import random
import threading
import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, NamedTuple

import numpy as np

from controller.backends.base import OpenVersion, RowSearch
from controller.core.routing import bucket_and_unit, choose_version
from controller.core.types import Routing
from controller.embed import fingerprint_key, make_embedder
from controller.embed.base import l2_normalize, unit_query
from controller.engine.backend import open_version
from controller.engine.embedders import stored_embedder
from controller.errors import Conflict, ControllerError, InvalidInput, NotFound, NotReady, shown_value
from controller.manifest.providers import capabilities
from controller.store.fs import Store
from controller.store.queries import fingerprint_key as short_key

log = logging.getLogger("controller.serve")

#: a dtype object, not np.float32: numpy converts the type to this on every call otherwise
_F32 = np.dtype(np.float32)
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
    # fixed per version, so worked out at load rather than per query
    dim: int = field(init=False)
    shape: tuple[int] = field(init=False)  # of a client's vector
    where: str = field(init=False)
    fingerprint: dict[str, Any] = field(init=False)
    #: the backend searches prepared rows (RowSearch) and this version's metric is cosine: the
    #: query is normalised here, in the same pass that checks it is finite
    unit_queries: bool = field(init=False)
    _search_row: Callable[[np.ndarray, int], tuple[list[float], list[int]]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.dim = int(self.meta["index"]["dim"])
        self.shape = (self.dim,)
        self.where = f"{self.name}/{self.version}"
        self.fingerprint = self.meta["fingerprint"]
        rows = isinstance(self.index, RowSearch)
        self.unit_queries = rows and self.meta["index"]["metric"] == "cosine"
        self._search_row = self.index.search_row if rows else self._row_of_search

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

    def embed_text(self, text: str) -> np.ndarray:
        if self.text_embedder is None:
            raise InvalidInput(
                f"{self.name}/{self.version} serves precomputed vectors and its manifest declares no "
                "spec.model.queryEmbedder: send {vector, model} instead of query text",
                field="query", value=None)
        row = np.ascontiguousarray(self.text_embedder.embed_queries(["query"], [text]), dtype=np.float32)
        if row.shape != (1, self.dim):  # RowSearch may hand its engine a bare pointer to dim floats
            raise ControllerError(f"the query embedder of {self.where} gave an array of shape {row.shape}, "
                                  f"not (1, {self.dim})")
        return row

    def answer(self, text: str | None, vector: Any, model: str | None,
               k: int) -> tuple[np.ndarray, list[str], list[float], list[int] | None]:
        """The query as a row of this version's space (embedded text, or a client's vector checked:
        same model, one finite row of the version's dimension) and its top k: ids, scores and ranks
        (None: 1, 2, ..., as the rule, no padding, gives).

        One method for the whole request path on purpose: a search has just pushed the interpreter's
        working set out of the CPU cache, so each Python call saved here is worth microseconds.
        """
        if vector is not None:
            if model != self.model_key:
                raise self.model_refusal(model)
            if self.unit_queries:
                array = np.asarray(vector, _F32)
                if array.shape != self.shape:
                    raise _wrong_length(array, self.dim, self.where)
                query, prepared, squared = unit_query(array)
                # the squared norm is NaN or inf when a value is, or when finite squares overflow; 0 for a
                # zero row. A cosine search needs a direction: such a row would be answered arbitrarily and
                # recorded into the drift reservoir, where it turns the statistics NaN
                if not 0.0 < squared < math.inf:
                    raise _not_finite(array) if not np.isfinite(array).all() else _no_direction()
            else:
                query = prepared = validate_vector(vector, self.dim, self.where)
        else:
            query = self.embed_text(text or "")
            prepared = l2_normalize(query) if self.unit_queries else query
            if self.unit_queries and not query.any():
                # text with nothing the model embeds ("!!!", an emoji for the hashing model): no direction, so
                # no ranking; answered as no hits (zeroResultRate), where a cosine search would list
                # arbitrary documents at score 0 (the service keeps no zero row for drift either)
                return query, [], [], None
        scores, rows = self._search_row(prepared, k)
        ids = self.ids
        if -1 not in rows:  # the rule: no padding (row -1); a list test, not a numpy call
            return query, [ids[row] for row in rows], scores, None
        kept = [r for r, row in enumerate(rows) if row >= 0]
        return query, [ids[rows[r]] for r in kept], [scores[r] for r in kept], [r + 1 for r in kept]

    def model_refusal(self, model: str | None) -> ControllerError:
        """Why a vector sent with `model` cannot be searched here: no key at all, or another space's."""
        if model is None:
            return InvalidInput(f"a vector needs model: the fingerprint key of its space ({self.model_key} for "
                                f"{self.where})", field="model")
        return Conflict(f"the vector's model {model!r} is not the model of the routed version {self.where} "
                        f"({self.model_key}: {fingerprint_key(self.fingerprint)}); vectors of two spaces "
                        "are never mixed")

    def _row_of_search(self, vector: np.ndarray, k: int) -> tuple[list[float], list[int]]:
        """RowSearch for a backend without it: its `search`, as lists (plain floats and ints at once)."""
        scores, rows = self.index.search(vector, k)
        return scores[0].tolist(), rows[0].tolist()


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
    #: each loaded version's role under this routing (fixed for the snapshot, so not worked out per query)
    roles: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles", {version: role_of(self.routing, version) for version in self.versions})


def role_of(routing: Routing, version: str) -> str:
    return "candidate" if version == routing.candidate and version != routing.stable else "stable"


@dataclass(slots=True)
class SearchOutcome:
    request_id: str
    name: str
    version: str
    role: str
    model: dict[str, Any]
    model_key: str
    bucket: float | None
    ids: list[str]
    scores: list[float]
    vector: np.ndarray
    took_ms: float
    k: int
    ranks: list[int] | None = None  # None: 1, 2, ... len(ids)
    unit: str | None = None  # the routing key's id for the event log (core.routing.bucket_and_unit)

    @property
    def hits(self) -> list[Hit]:
        """The results as (id, score, rank) tuples, made when asked for: the service reads ids and
        scores directly, and making k tuples per query cost as much as the rest of the routing."""
        return list(map(Hit, self.ids, self.scores, self.ranks or range(1, len(self.ids) + 1)))


#: request ids are cut from one os.urandom call per this many (a syscall per query was a tenth of
#: the Python time of a search)
_ID_BATCH = 256
_ids: Any = iter(())


def request_id() -> str:
    """32 random hex digits, unguessable (feedback names its request by it), as uuid4().hex was.

    `next` on a list iterator is atomic under the GIL, so threads never share an id; two threads
    that both find the batch used up each draw a fresh one, which is harmless.
    """
    return next(_ids, None) or _new_batch()


def _new_batch() -> str:
    """Draw the next batch of request ids and return its first."""
    global _ids
    pool = os.urandom(16 * _ID_BATCH).hex()
    batch = iter([pool[i:i + 32] for i in range(0, len(pool), 32)])
    _ids = batch
    return next(batch)


def _fresh_ids_after_fork() -> None:
    """A forked worker must not hand out the ids its parent still holds."""
    global _ids
    _ids = iter(())


os.register_at_fork(after_in_child=_fresh_ids_after_fork)


def validate_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidInput(f"k must be an integer from 1 to {MAX_K}, got {shown_value(k)}", field="k", value=k)
    return k


def validate_vector(vector: Any, dim: int, where: str) -> np.ndarray:
    """One finite row of the version's dimension; never a silent reshape or NaN search."""
    array = _shaped(vector, dim, where)
    # one BLAS call instead of isfinite + all: a NaN or inf makes the sum of squares NaN or inf;
    # finite values can too (their squares overflow float32), so only then look value by value
    if not math.isfinite(array.dot(array)) and not np.isfinite(array).all():
        raise _not_finite(array)
    return np.ascontiguousarray(array).reshape(1, -1)  # contiguous: RowSearch may hand its engine a bare pointer


def _shaped(vector: Any, dim: int, where: str) -> np.ndarray:
    array = np.asarray(vector, _F32)
    if array.ndim != 1 or array.shape[0] != dim:
        raise _wrong_length(array, dim, where)
    return array


def _wrong_length(array: np.ndarray, dim: int, where: str) -> InvalidInput:
    return InvalidInput(f"vector has {array.size} values but {where} has {dim} dimensions", field="vector",
                        value=None)


def _not_finite(array: np.ndarray) -> InvalidInput:
    return InvalidInput(f"vector contains NaN or inf (first at position {int(np.argmin(np.isfinite(array)))})",
                        field="vector", value=None)


def _no_direction() -> InvalidInput:
    return InvalidInput("vector has no direction a cosine search can use: its norm is 0 or overflows float32",
                        field="vector", value=None)


def search(routed: RoutedIndex, *, text: str | None = None, vector: Any = None, model: str | None = None,
           k: int = 10, key: str | None = None, draw: float | None = None) -> SearchOutcome:
    """Route (sticky by key), embed with the routed version's own model, search its kept index."""
    started = time.perf_counter()
    k = validate_k(k)
    if (text is None) == (vector is None):
        raise InvalidInput("send exactly one of query (text) or vector", field="query", value=None)
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise InvalidInput("query must be non-empty text", field="query", value=None)
    if key is None:
        position = unit = None
        if draw is None:
            draw = random.random() * 100  # = uniform(0, 100)
    else:  # hashed once: routing and the outcome share it
        position, unit = _buckets.get(key) or _new_bucket(key)
        draw = position
    version = choose_version(routed.routing, key=None, draw=draw)
    loaded = routed.versions.get(version) if version else None
    if loaded is None:  # off the hot path: only a routed version that is not loaded gets here
        version, loaded = _stand_in(routed, version)
    try:
        query, ids, scores, ranks = loaded.answer(text, vector, model, k)
    except Exception as exc:
        # lets the service attribute it: a failing query embedder is the candidate's error (errorRate)
        exc.version, exc.role = version, routed.roles[version]  # type: ignore[attr-defined]
        raise
    return SearchOutcome(request_id(), routed.name, version, routed.roles[version],
                         loaded.fingerprint, loaded.model_key, position, ids, scores, query,
                         (time.perf_counter() - started) * 1000, k, ranks, unit)


def routing_unit(key: str | None) -> str | None:
    """The event log's id of a routing key (None without a key), remembered like its bucket."""
    if key is None:
        return None
    return (_buckets.get(key) or _new_bucket(key))[1]


#: the most routing keys whose bucket is remembered (emptied when full; keys are at most 512 characters
#: over HTTP, so a few MB at worst)
MAX_BUCKETS = 8192
#: routing key -> bucket_and_unit(key): a pure function of the key, so a returning user's key is hashed
#: once, not on every query (the SHA-256 ran cold after each search); the version is still chosen per
#: query from the current weight
_buckets: dict[str, tuple[float, str]] = {}


def _new_bucket(key: str) -> tuple[float, str]:
    """bucket_and_unit(key), remembered."""
    if len(_buckets) >= MAX_BUCKETS:
        _buckets.clear()
    known = _buckets[key] = bucket_and_unit(key)
    return known


def search_version(routed: RoutedIndex, version: str, *, text: str | None = None, vector: Any = None,
                   model: str | None = None, k: int = 10) -> SearchOutcome:
    """Search one named loaded version, whatever the weight (mirroring and interleaving use this)."""
    started = time.perf_counter()
    loaded = routed.versions.get(version)
    if loaded is None:  # never a stand-in: mirroring and interleaving skip the query instead
        raise _not_loaded(routed, version)
    query, ids, scores, ranks = loaded.answer(text, vector, model, k)
    return SearchOutcome(request_id(), routed.name, version, routed.roles[version],
                         loaded.fingerprint, loaded.model_key, None, ids, scores, query,
                         (time.perf_counter() - started) * 1000, k, ranks)


def _stand_in(routed: RoutedIndex, version: str | None) -> tuple[str, LoadedVersion]:
    """Who answers a query routed to a version the snapshot could not load.

    The stable answers for a candidate that failed to load: it is the known-good version and the
    routing still routes it. Nothing answers for a stable (or a lone candidate): serving any other
    loaded version would serve one the routing record withdrew.
    """
    if version is None:
        raise NotReady(f"{routed.name} serves no version yet; run `controller reconcile` first")
    stable = routed.routing.stable
    if stable is not None and stable != version and stable in routed.versions:
        return stable, routed.versions[stable]
    raise _not_loaded(routed, version)


def _not_loaded(routed: RoutedIndex, version: str) -> NotReady:
    """The 503 for a routed version missing from the snapshot, with why its load failed when known."""
    error = getattr(routed, "failed", {}).get(version)  # only the pool's snapshots (PoolSnapshot) know why
    if error is None:
        return NotReady(f"{routed.name}/{version} is not loaded")
    return NotReady(f"{routed.name}/{version} is routed but could not be loaded ({error}); the service "
                    "retries with backoff and serves it once it loads")


@dataclass(frozen=True)
class PoolSnapshot(RoutedIndex):
    """A snapshot the pool published: also why each routed version missing from `versions` failed to load."""

    failed: dict[str, str] = field(default_factory=dict)


class _LoadFailure(NamedTuple):
    error: str  # "<exception type>: <message>"
    tries: int
    retry_at: float  # on the pool's clock


class VersionPool:
    """Routed versions of the served indexes, kept loaded and following the routing records.

    The data plane follows the record even when a routed version cannot be loaded: the new routing is
    published without that version (its queries get 503, or the stable for a candidate's share), never
    the last good snapshot, which would keep serving a version the record withdrew.
    """

    #: seconds before a failed load is tried again, doubled per failure up to RETRY_MAX_S
    RETRY_FIRST_S = 1.0
    RETRY_MAX_S = 60.0

    def __init__(self, store: Store, indexes: list[str] | None = None, *, grace_s: float = DEFAULT_GRACE_S,
                 poll_s: float = DEFAULT_POLL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.only = list(indexes) if indexes else None
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.clock = clock
        self._routed: dict[str, PoolSnapshot] = {}  # replaced whole, never mutated
        self._loaded: dict[tuple[str, str], LoadedVersion] = {}
        self._retired: dict[tuple[str, str], float] = {}  # unrouted since (monotonic)
        self._errors: dict[str, str] = {}  # per index: why its routing record cannot be followed
        self._failures: dict[tuple[str, str], _LoadFailure] = {}  # routed versions whose load failed
        self._loading: dict[tuple[str, str], float] = {}  # loads under way, since (clock); replaced whole
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
        """Ready when every served index can answer from its published snapshot; else why not, per index.

        An index can when its snapshot routes nothing or has its stable (with no stable, its candidate)
        loaded. A new routing still loading does not count: the old snapshot serves meanwhile, and every
        replica follows the same store, so a slow load would take every pod out of the Service at once.
        """
        why: dict[str, str] = {}
        names = self._served_names()
        if not names:
            why["*"] = f"the store {self.store.root} has no index yet"
        for name in names:
            # an index that routes nothing yet is ready (its searches get 503 + Retry-After): one
            # unbuilt index must not take the others out of service
            reason = self._unready(name)
            if reason is not None:
                why[name] = reason
        return not why, why

    def _unready(self, name: str) -> str | None:
        routed = self._routed.get(name)
        if routed is None:
            loading = [v for (n, v) in self._loading if n == name]
            return self._errors.get(name) or (f"loading {', '.join(loading)}" if loading else "not loaded yet")
        primary = routed.routing.stable or routed.routing.candidate
        if primary is None or primary in routed.versions:
            return None
        return self._missing(name, primary)

    def _missing(self, name: str, version: str) -> str:
        """Why a routed version is absent from the snapshot."""
        failure = self._failures.get((name, version))
        if failure is None:
            return f"{version} is not loaded"
        wait = max(0.0, failure.retry_at - self.clock())
        return (f"{version} failed to load ({failure.error}); tried {failure.tries} time(s), next try in "
                f"{wait:.0f} s")

    def problems(self) -> dict[str, list[str]]:
        """What an operator should know per served index, ready or not; an index with nothing to say is absent.

        Beyond ready()'s reasons: a candidate that failed to load (the stable answers its share), a
        newly routed version still loading (the published snapshot serves meanwhile), a routing record
        that cannot be read (the last snapshot serves).
        """
        out: dict[str, list[str]] = {}
        loading = self._loading  # replaced whole, never mutated: safe to iterate here
        for name in self._served_names():
            error = self._errors.get(name)  # one read: the refresher may drop it meanwhile
            notes = [f"routing record not followed: {error}"] if error else []
            routed = self._routed.get(name)
            if routed is not None:
                routing = routed.routing
                missing = [v for v in (routing.stable, routing.candidate) if v and v not in routed.versions]
                notes += [self._consequence(routed, version) for version in missing]
            notes += [f"{version} is loading ({self.clock() - since:.0f} s so far); the published snapshot "
                      "serves meanwhile" for (n, version), since in loading.items() if n == name]
            if notes:
                out[name] = notes
        return out

    def _consequence(self, routed: RoutedIndex, version: str) -> str:
        """A missing routed version, and who answers its queries meanwhile."""
        routing, why = routed.routing, self._missing(routed.name, version)
        if version != routing.stable and routing.stable in routed.versions:
            return f"candidate {why}: the stable {routing.stable} answers its {routing.weight:g}% share"
        return f"{role_of(routing, version)} {why}: its queries get 503"

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
                except (ControllerError, OSError, RuntimeError, ValueError, KeyError) as exc:
                    # the record itself is unreadable (a version that fails to load is handled per version):
                    # there is no newer routing to follow, so the last snapshot stays; /readyz says why
                    self._index_failed(name, f"{type(exc).__name__}: {exc}")
                else:
                    if self._errors.pop(name, None) is not None:
                        log.info("following the routing record of %s again", name)
            self._unload_expired()
            return changed

    def _index_failed(self, name: str, error: str) -> None:
        if self._errors.get(name) != error:  # once per new error, not on every poll
            log.warning("cannot follow the routing record of %s: %s", name, error)
        self._errors[name] = error

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
        # an unchanged record is skipped, unless a failed load of it is due for another try
        if current is not None and current.signature == signature and not self._retry_due(name):
            return False
        if not self.store.index_dir(name).is_dir():
            if self.only is None:
                self._routed = {n: r for n, r in self._routed.items() if n != name}
                self._forget_failures(name, keep=[])
                return True
            raise NotFound(f"no index named {name!r} in the store {self.store.root}")
        routing = self.store.routing(name)
        wanted = [v for v in (routing.stable, routing.candidate) if v]
        self._forget_failures(name, keep=wanted)  # routed again later, a version gets a fresh first try
        versions = {}
        for version in wanted:
            loaded = self._loaded.get((name, version)) or self._load(name, version)
            if loaded is not None:
                self._retired.pop((name, version), None)
                versions[version] = loaded
        failed = {v: self._failures[(name, v)].error for v in wanted if v not in versions}
        now = self.clock()
        for key in self._loaded:
            if key[0] == name and key[1] not in versions:
                self._retired.setdefault(key, now)
        if current is not None and current.signature == signature and \
                current.versions.keys() == versions.keys() and current.failed == failed:
            return False  # a retry that failed again, the same way: the published snapshot still says it all
        # published even when some routed versions failed to load: the routing record is followed, never
        # the last good snapshot, which may serve a version the record withdrew (search() answers for the
        # missing ones)
        published = PoolSnapshot(name, routing, versions, signature, failed)
        self._routed = {**self._routed, name: published}  # the atomic swap
        return True

    def _retry_due(self, name: str) -> bool:
        now = self.clock()
        return any(key[0] == name and failure.retry_at <= now for key, failure in self._failures.items())

    def _forget_failures(self, name: str, keep: list[str]) -> None:
        for key in [key for key in self._failures if key[0] == name and key[1] not in keep]:
            del self._failures[key]

    def _load(self, name: str, version: str) -> LoadedVersion | None:
        """Load a routed version and keep it; None when it failed to, now or recently (then it waits out
        its backoff: a broken file is not re-read on every poll)."""
        key = (name, version)
        failure = self._failures.get(key)
        if failure is not None and self.clock() < failure.retry_at:
            return None
        started = time.perf_counter()
        self._loading = {**self._loading, key: self.clock()}
        try:
            loaded = load_version(self.store, name, version)
        except Exception as exc:  # noqa: BLE001 - whatever breaks one version's files must not stop the pool
            self._load_failed(key, f"{type(exc).__name__}: {exc}", failure)
            return None
        finally:
            self._loading = {k: since for k, since in self._loading.items() if k != key}
        self._loaded[key] = loaded
        self._failures.pop(key, None)
        log.info("loaded %s/%s in %.0f ms (%s)%s", name, version, (time.perf_counter() - started) * 1000,
                 "memory-mapped" if loaded.mmapped else "read into memory",
                 f", after failing {failure.tries} time(s)" if failure else "")
        return loaded

    def _load_failed(self, key: tuple[str, str], error: str, previous: _LoadFailure | None) -> None:
        """Remember the failure and when to try again: RETRY_FIRST_S, doubled per failure up to RETRY_MAX_S."""
        tries = previous.tries + 1 if previous else 1
        delay = min(self.RETRY_FIRST_S * 2 ** min(tries - 1, 30), self.RETRY_MAX_S)  # capped: no float overflow
        self._failures[key] = _LoadFailure(error, tries, self.clock() + delay)
        if previous is None or previous.error != error:  # once per new error, not on every try
            log.warning("cannot load %s/%s: %s (next try in %.0f s, backing off up to %.0f s)", key[0], key[1],
                        error, delay, self.RETRY_MAX_S)

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
                # not opened/closed: the refresh itself reads routing.json, and a version that fails to
                # load would wake the loop with its own read, retrying in a busy loop instead of per poll
                if event.event_type not in ("created", "modified", "moved", "deleted"):
                    return
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
