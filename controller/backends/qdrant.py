"""Qdrant: one collection per version, the alias is a Qdrant collection alias switched atomically.

* Collection ``<index>__<version>``; point id = row number. The collection's metadata holds the
  controller's record: index, version, model fingerprint, dim, metric, parameters and ``state``
  (``building`` until ``finish``, then ``ready``). A writer killed mid-fill leaves a ``building``
  collection: ``list_versions`` reports it, ``open_version`` and ``set_alias`` refuse it,
  ``delete_version`` drops it.
* Cosine collections store unit vectors (Qdrant normalises on upload), so each point's payload
  keeps its raw norm and ``vectors()`` gives back raw vectors (to float32 rounding).
* On a server, indexing is off while rows are uploaded (``indexing_threshold=0``) and switched on
  by ``finish``, which waits for the collection to turn green before marking it ready.
* ``set_alias`` sends delete+create of the alias in one ``update_collection_aliases`` request,
  which Qdrant applies atomically.

Connection: ``$QDRANT_URL`` (+ ``$QDRANT_API_KEY``) for a server; ``$QDRANT_PATH`` for
qdrant-client's local mode (embedded, exact search only, one process at a time: its storage
folder is locked by the process that opened it; ``:memory:`` keeps nothing on disk).
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from controller.backends.base import BackendSettings, Capabilities, Metric, VersionRef, check_chunk
from controller.errors import BackendError, InvalidInput, NotFound

NAME = "qdrant"
URL_ENV, KEY_ENV, PATH_ENV = "QDRANT_URL", "QDRANT_API_KEY", "QDRANT_PATH"
FIELD = "spec.index.backend"
UPLOAD_BATCH = 512
#: Qdrant's default indexing threshold (kB): restored after the bulk upload.
DEFAULT_INDEXING_THRESHOLD = 10_000
BUILD_TIMEOUT = 3600.0

HNSW_KEYS = {"m": (4, 128), "efConstruct": (4, 4096), "efSearch": (1, 65536)}
TOP_KEYS = {"hnswConfig", "quantization"}
META = "controller_"


def _qdrant():
    try:
        import qdrant_client
        from qdrant_client import models
    except ImportError as exc:
        raise BackendError(NAME, "qdrant-client is not installed: pip install 'embedding-index-controller[qdrant]'",
                           setting="python package qdrant-client") from exc
    return qdrant_client, models


def index_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """``spec.index.backend`` for Qdrant, checked and in one canonical form (kept in collection metadata)."""
    unknown = sorted(set(params) - TOP_KEYS)
    if unknown:
        raise InvalidInput(f"unknown qdrant setting {unknown[0]!r}; known: {', '.join(sorted(TOP_KEYS))}",
                           field=f"{FIELD}.{unknown[0]}", value=unknown[0])
    out: dict[str, Any] = {}
    hnsw = params.get("hnswConfig")
    if hnsw is not None:
        if not isinstance(hnsw, Mapping):
            raise InvalidInput("hnswConfig must be a mapping such as {m: 16, efConstruct: 100}",
                               field=f"{FIELD}.hnswConfig", value=hnsw)
        for key, value in hnsw.items():
            if key not in HNSW_KEYS:
                raise InvalidInput(f"unknown hnswConfig parameter {key!r}; known: {', '.join(sorted(HNSW_KEYS))}",
                                   field=f"{FIELD}.hnswConfig.{key}", value=key)
            low, high = HNSW_KEYS[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(f"hnswConfig.{key} must be an integer in [{low}, {high}]",
                                   field=f"{FIELD}.hnswConfig.{key}", value=value)
        out["hnswConfig"] = dict(hnsw)
    quant = params.get("quantization")
    if quant is not None:
        out["quantization"] = _quantization(quant)
    return out


_EXAMPLE = {"scalar": "{quantile: 0.99}", "binary": "{rescore: true}"}


def _quantization(quant: Any) -> dict[str, Any]:
    field = f"{FIELD}.quantization"
    if not isinstance(quant, Mapping) or len(quant) != 1 or next(iter(quant)) not in ("scalar", "binary"):
        raise InvalidInput("quantization must be {scalar: {quantile: 0.99}} or {binary: {}}", field=field, value=quant)
    kind, given = next(iter(quant.items()))
    if given is not None and not isinstance(given, Mapping):
        raise InvalidInput(f"quantization.{kind} must be a mapping such as {_EXAMPLE[kind]} (or empty)",
                           field=f"{field}.{kind}", value=given)
    given = dict(given or {})
    allowed = {"scalar": {"quantile", "alwaysRam", "rescore"}, "binary": {"alwaysRam", "rescore"}}[kind]
    for key, value in given.items():
        if key not in allowed:
            raise InvalidInput(f"unknown {kind} quantization parameter {key!r}; known: {', '.join(sorted(allowed))}",
                               field=f"{field}.{kind}.{key}", value=key)
        if key == "quantile" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.5 <= value <= 1.0):
            raise InvalidInput("quantile must be a number in [0.5, 1.0]", field=f"{field}.{kind}.quantile", value=value)
        if key in ("alwaysRam", "rescore") and not isinstance(value, bool):
            raise InvalidInput(f"{key} must be true or false", field=f"{field}.{kind}.{key}", value=value)
    return {kind: given}


def _server_client(qdrant_client: Any, url: str, key: str | None) -> Any:
    """The client for $QDRANT_URL; it parses the URL at once, so a bad one fails here, named, in one line."""
    try:
        return qdrant_client.QdrantClient(url=url, api_key=key, timeout=30, check_compatibility=False)
    except ValueError as exc:  # urllib3's LocationParseError is one: 'not a url', a port of 99999 or 'abc'
        url = re.sub(r"//[^/@]*@", "//***@", url)  # user:password@ never reaches a message
        if key:
            url = url.replace(key, "***")
        raise BackendError(NAME, f"{URL_ENV}={url!r} is not a usable URL such as http://127.0.0.1:6333 "
                           f"({type(exc).__name__})", setting=URL_ENV) from None


def collection_name(index: str, version: str) -> str:
    return f"{index}__{version}"


class QdrantBackend:
    """VectorBackend on Qdrant (a server, or qdrant-client's local mode; see the module docstring)."""

    type: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(in_place_update=False, reusable_training=False, exact=False)

    def __init__(self, url: str | None = None, api_key: str | None = None, path: str | None = None) -> None:
        self._url = url
        self._api_key = api_key
        self._path = path
        self._client = None
        # local mode keeps SQLite handles and plain dicts: one call at a time; a server client is thread-safe
        self._lock = threading.RLock()

    # ----- connection and errors -----

    def _settings(self) -> tuple[str | None, str | None, str | None]:
        url = self._url if self._url is not None else os.environ.get(URL_ENV) or None
        key = self._api_key if self._api_key is not None else os.environ.get(KEY_ENV) or None
        path = self._path if self._path is not None else os.environ.get(PATH_ENV) or None
        return url, key, path

    @property
    def local(self) -> bool:
        url, _, path = self._settings()
        return url is None and path is not None

    def _setting(self) -> str:
        return URL_ENV if not self.local else PATH_ENV

    def client(self):
        with self._lock:
            if self._client is None:
                self._client = self._open()
            return self._client

    def _open(self):
        qdrant_client, _ = _qdrant()
        url, key, path = self._settings()
        if url is None and path is None:
            raise BackendError(NAME, f"no Qdrant configured: set {URL_ENV} (and {KEY_ENV}) for a server, or "
                               f"{PATH_ENV} for local mode", setting=URL_ENV)
        if url is not None:
            return _server_client(qdrant_client, url, key)
        if path == ":memory:":  # nothing persisted: tests and benchmarks
            return qdrant_client.QdrantClient(location=":memory:", force_disable_check_same_thread=True)
        try:
            return qdrant_client.QdrantClient(path=path, force_disable_check_same_thread=True)
        except RuntimeError as exc:
            if "already accessed" in str(exc):
                raise BackendError(NAME, f"local storage {path} is open in another process; local mode serves one "
                                   f"process at a time: use a Qdrant server ({URL_ENV}) to share it",
                                   setting=PATH_ENV) from None
            raise BackendError(NAME, f"cannot open local storage {path}: {exc}", setting=PATH_ENV) from None

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _scrub(self, text: Any) -> str:
        text = " ".join(str(text).split())
        key = self._settings()[1]
        return text.replace(key, "***") if key else text

    @contextmanager
    def _call(self, what: str, collection: str | None = None) -> Iterator[Any]:
        """The client, with Qdrant's and httpx's errors turned into one-line controller errors."""
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        with self._lock if self.local else _nolock():
            client = self.client()
            try:
                yield client
            except UnexpectedResponse as exc:
                raise self._http_error(exc, what, collection) from None
            except ResponseHandlingException as exc:
                url = self._settings()[0]
                raise BackendError(NAME, f"cannot reach Qdrant at {url} while {what}: "
                                   f"{self._scrub(exc.source)[:160]}", setting=URL_ENV) from None
            except ValueError as exc:  # local mode reports a missing collection this way
                if collection is not None and "not found" in str(exc):
                    raise _missing(collection) from None
                raise BackendError(NAME, f"{what} failed: {self._scrub(exc)[:200]}", setting=self._setting()) from None
            except Exception as exc:  # grpc/httpx transport errors of a server that went away
                if type(exc).__module__.split(".")[0] in ("httpx", "httpcore", "grpc"):
                    raise BackendError(NAME, f"cannot reach Qdrant at {self._settings()[0]} while {what}: "
                                       f"{self._scrub(exc)[:160]}", setting=URL_ENV) from None
                raise

    def _http_error(self, exc, what: str, collection: str | None) -> Exception:
        status = exc.status_code
        if status in (401, 403):
            return BackendError(NAME, f"Qdrant at {self._settings()[0]} refused the API key (HTTP {status}) while "
                                f"{what}", setting=KEY_ENV)
        if status == 404 and collection is not None:
            return _missing(collection)
        detail = self._scrub(exc.content.decode(errors="replace"))[:200]
        return BackendError(NAME, f"{what} failed: HTTP {status} {detail}", setting=self._setting())

    # ----- protocol -----

    def validate(self, settings: BackendSettings, dim: int, metric: Metric) -> None:
        index_params(settings.params)
        if metric not in ("cosine", "ip", "l2"):
            raise InvalidInput("qdrant supports metrics cosine, ip, l2", field="spec.index.metric", value=metric)
        if not 1 <= dim <= 65536:
            raise InvalidInput("qdrant stores 1 to 65536 dimensions", field="spec.model.dim", value=dim)

    def health(self) -> None:
        with self._call("listing collections") as client:
            client.get_collections()

    def create_version(self, ref: VersionRef, settings: BackendSettings) -> QdrantWriter:
        self.validate(settings, ref.dim, ref.metric)
        params = index_params(settings.params)
        _, models = _qdrant()
        name = collection_name(ref.index, ref.version)
        existing = self._metadata(name)
        if existing is not None:
            if int(existing.get(META + "dim", ref.dim)) != ref.dim:
                raise BackendError(NAME, f"collection {name} already holds {existing.get(META + 'dim')}-dimensional "
                                   f"vectors, the manifest asks for {ref.dim}: use a new spec.index.version",
                                   setting="spec.model.dim")
            if existing.get(META + "state") == "ready":
                raise BackendError(NAME, f"collection {name} already exists (finished): delete it first or use a "
                                   "new spec.index.version", setting="spec.index.version")
            with self._call(f"dropping the partial collection {name}") as client:
                client.delete_collection(name)
        hnsw = params.get("hnswConfig", {})
        vectors = models.VectorParams(
            size=ref.dim, distance=_DISTANCE[ref.metric](models),
            hnsw_config=models.HnswConfigDiff(m=hnsw.get("m"), ef_construct=hnsw.get("efConstruct"))
            if hnsw else None)
        metadata = {META + "index": ref.index, META + "version": ref.version, META + "state": "building",
                    META + "fingerprint": ref.fingerprint, META + "dim": ref.dim, META + "metric": ref.metric,
                    META + "params": json.dumps(params, sort_keys=True)}
        with self._call(f"creating collection {name}") as client:
            client.create_collection(name, vectors_config=vectors, metadata=metadata,
                                     quantization_config=_quantization_config(models, params.get("quantization")),
                                     optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0))
        return QdrantWriter(self, ref, name, params)

    def open_version(self, ref: VersionRef) -> QdrantVersion:
        name = collection_name(ref.index, ref.version)
        meta = self._metadata(name)
        if meta is None:
            raise _missing(name)
        if meta.get(META + "state") != "ready":
            raise NotFound(f"backend {NAME}: collection {name} was never finished (partial): delete it and build again")
        if int(meta.get(META + "dim", -1)) != ref.dim:
            raise BackendError(NAME, f"collection {name} holds {meta.get(META + 'dim')}-dimensional vectors, the "
                               f"version expects {ref.dim}", setting="spec.model.dim")
        return QdrantVersion(self, ref, name, json.loads(meta.get(META + "params") or "{}"))

    def delete_version(self, ref: VersionRef) -> None:
        name = collection_name(ref.index, ref.version)
        if self._alias_target(ref.index) == name:
            raise BackendError(NAME, f"collection {name} is what the alias {ref.index!r} serves: point the alias "
                               "elsewhere before deleting it", setting="alias")
        with self._call(f"deleting collection {name}") as client:
            client.delete_collection(name)

    def list_versions(self, index: str) -> list[str]:
        with self._call("listing collections") as client:
            names = [c.name for c in client.get_collections().collections]
        found = []
        for name in sorted(n for n in names if n.startswith(f"{index}__")):
            meta = self._metadata(name)
            if meta is not None and meta.get(META + "index") == index:
                found.append(str(meta.get(META + "version")))
        return found

    def partial_versions(self, index: str) -> list[str]:
        return [v for v in self.list_versions(index)
                if (self._metadata(collection_name(index, v)) or {}).get(META + "state") != "ready"]

    def get_alias(self, index: str) -> str | None:
        target = self._alias_target(index)
        if target is None:
            return None
        meta = self._metadata(target) or {}
        return meta.get(META + "version") or target.split("__", 1)[-1]

    def set_alias(self, index: str, version: str | None) -> None:
        _, models = _qdrant()
        ops: list[Any] = []
        if self._alias_target(index) is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=index)))
        if version is not None:
            name = collection_name(index, version)
            meta = self._metadata(name)
            if meta is None or meta.get(META + "state") != "ready":
                raise BackendError(NAME, f"cannot point the alias {index!r} at {version!r}: "
                                   f"{'it does not exist' if meta is None else 'it was never finished'}",
                                   setting="alias")
            ops.append(models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=name,
                                                                                   alias_name=index)))
        if ops:
            with self._call(f"switching the alias {index}") as client:
                client.update_collection_aliases(change_aliases_operations=ops)

    # ----- helpers -----

    def _metadata(self, name: str) -> dict[str, Any] | None:
        """The collection's controller record; None when the collection does not exist."""
        try:
            with self._call(f"reading collection {name}", collection=name) as client:
                info = client.get_collection(name)
        except NotFound:
            return None
        return dict(info.config.metadata or {})

    def _alias_target(self, index: str) -> str | None:
        with self._call("reading aliases") as client:
            aliases = client.get_aliases().aliases
        return next((a.collection_name for a in aliases if a.alias_name == index), None)

    def _wait_green(self, name: str, timeout: float = BUILD_TIMEOUT) -> None:
        _, models = _qdrant()
        deadline = time.monotonic() + timeout
        while True:
            with self._call(f"waiting for the index of {name}", collection=name) as client:
                status = client.get_collection(name).status
            if status == models.CollectionStatus.GREEN:
                return
            if status == models.CollectionStatus.RED:
                raise BackendError(NAME, f"building the index of {name} failed (collection status red)",
                                   setting="spec.index.backend.hnswConfig")
            if time.monotonic() > deadline:
                raise BackendError(NAME, f"the index of {name} was not built within {timeout:.0f} s",
                                   setting="spec.index.backend.hnswConfig")
            time.sleep(0.5)


class _nolock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _missing(name: str) -> NotFound:
    return NotFound(f"backend {NAME}: collection {name} does not exist (deleted outside the controller?)")


_DISTANCE = {"cosine": lambda m: m.Distance.COSINE, "ip": lambda m: m.Distance.DOT, "l2": lambda m: m.Distance.EUCLID}


def _quantization_config(models, quant: Mapping[str, Any] | None):
    if not quant:
        return None
    kind, given = next(iter(quant.items()))
    if kind == "scalar":
        return models.ScalarQuantization(scalar=models.ScalarQuantizationConfig(
            type=models.ScalarType.INT8, quantile=given.get("quantile"), always_ram=given.get("alwaysRam")))
    return models.BinaryQuantization(binary=models.BinaryQuantizationConfig(always_ram=given.get("alwaysRam")))


class QdrantWriter:
    """Uploads in batches (point id = row); ``finish`` builds the index and marks the collection ready."""

    def __init__(self, backend: QdrantBackend, ref: VersionRef, name: str, params: dict[str, Any]) -> None:
        self.backend = backend
        self.ref = ref
        self.name = name
        self.params = params
        self.rows = 0

    def add(self, vectors: np.ndarray, *, ids: Sequence[str] | None = None,
            content_hashes: Sequence[str] | None = None) -> None:
        _, models = _qdrant()
        vectors = check_chunk(NAME, f"Qdrant collection {self.name}", self.ref.dim, vectors, self.rows, ids,
                              content_hashes)
        norms = np.linalg.norm(vectors, axis=1)
        for start in range(0, len(vectors), UPLOAD_BATCH):
            stop = min(start + UPLOAD_BATCH, len(vectors))
            rows = range(self.rows + start, self.rows + stop)
            payloads = []
            for i, row in enumerate(rows, start):
                payload: dict[str, Any] = {"row": row, "norm": float(norms[i])}
                if ids is not None:
                    payload["id"] = str(ids[i])
                if content_hashes is not None:
                    payload["contentHash"] = str(content_hashes[i])
                payloads.append(payload)
            batch = models.Batch(ids=list(rows), vectors=vectors[start:stop].tolist(), payloads=payloads)
            with self.backend._call(f"uploading rows to {self.name}", collection=self.name) as client:
                client.upsert(self.name, points=batch, wait=True)
        self.rows += len(vectors)

    def finish(self) -> None:
        _, models = _qdrant()
        b = self.backend
        if not b.local:
            # declared HNSW parameters mean an HNSW graph, however small the collection
            threshold = 1 if self.params.get("hnswConfig") else DEFAULT_INDEXING_THRESHOLD
            with b._call(f"building the index of {self.name}", collection=self.name) as client:
                client.update_collection(self.name, optimizers_config=models.OptimizersConfigDiff(
                    indexing_threshold=threshold))
            b._wait_green(self.name)
        with b._call(f"finishing {self.name}", collection=self.name) as client:
            count = client.count(self.name, exact=True).count
            if count != self.rows:
                raise BackendError(NAME, f"collection {self.name} holds {count} points, {self.rows} were uploaded "
                                   "(written by another process?)", setting="spec.index.version")
            client.update_collection(self.name, metadata={META + "state": "ready", META + "rows": self.rows})

    def abort(self) -> None:
        self.backend.delete_version(self.ref)


class QdrantVersion:
    """A finished collection: searched with its HNSW parameters, or with ``exact=True``."""

    def __init__(self, backend: QdrantBackend, ref: VersionRef, name: str, params: Mapping[str, Any]) -> None:
        self.backend = backend
        self.ref = ref
        self.name = name
        self.params = dict(params)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, models = _qdrant()
        ef = self.params.get("hnswConfig", {}).get("efSearch")
        quant = self.params.get("quantization")
        rescore = next(iter(quant.values())).get("rescore", True) if quant else None
        return self._run(queries, k, models.SearchParams(
            hnsw_ef=max(ef, k) if ef else None,
            quantization=models.QuantizationSearchParams(rescore=rescore) if quant else None))

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        _, models = _qdrant()
        return self._run(queries, k, models.SearchParams(exact=True, quantization=models.QuantizationSearchParams(
            ignore=True)))

    def _run(self, queries: np.ndarray, k: int, params) -> tuple[np.ndarray, np.ndarray]:
        _, models = _qdrant()
        queries = np.asarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.ref.dim:
            raise BackendError(NAME, f"query vectors of shape {queries.shape} do not fit collection {self.name} "
                               f"({self.ref.dim} dimensions)", setting="spec.model.dim")
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        rows = np.full((nq, k), -1, dtype=np.int64)
        if nq == 0 or k <= 0:
            return scores, rows
        if self.backend.local:
            params = None  # local mode always searches exactly and warns about any search parameter
        requests = [models.QueryRequest(query=q.tolist(), limit=k, params=params, with_payload=False)
                    for q in queries]
        out = []
        for start in range(0, nq, 256):
            with self.backend._call(f"searching {self.name}", collection=self.name) as client:
                out += client.query_batch_points(self.name, requests=requests[start:start + 256])
        for i, response in enumerate(out):
            points = response.points
            if points:
                rows[i, :len(points)] = [int(p.id) for p in points]
                got = np.array([p.score for p in points], dtype=np.float64)
                scores[i, :len(points)] = -(got * got) if self.ref.metric == "l2" else got
        return scores, rows

    def count(self) -> int:
        with self.backend._call(f"counting {self.name}", collection=self.name) as client:
            return int(client.count(self.name, exact=True).count)

    def vectors(self) -> np.ndarray:
        out = np.zeros((0, self.ref.dim), dtype=np.float32)
        chunks, norms, ids = [], [], []
        offset = None
        while True:
            with self.backend._call(f"reading vectors of {self.name}", collection=self.name) as client:
                points, offset = client.scroll(self.name, limit=2048, offset=offset, with_vectors=True,
                                               with_payload=["norm"])
            ids += [int(p.id) for p in points]
            chunks.append(np.asarray([p.vector for p in points], dtype=np.float32).reshape(-1, self.ref.dim))
            norms += [float((p.payload or {}).get("norm", 1.0)) for p in points]
            if offset is None:
                break
        if chunks:
            out = np.concatenate(chunks)
        order = np.argsort(np.asarray(ids, dtype=np.int64), kind="stable")
        out = out[order]
        if self.ref.metric == "cosine":
            # Qdrant keeps unit vectors for cosine: the payload's norm restores the raw vector
            out = (out * np.asarray(norms, dtype=np.float32)[order][:, None]).astype(np.float32)
        return out

    def close(self) -> None:
        """The client belongs to the backend: nothing to release per version."""
