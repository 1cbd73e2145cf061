"""The FastAPI app: search, feedback, health, readiness and metrics over a `VersionPool`.

Error contract: every refusal is JSON ``{"error": sentence, "field": name or null}``
with a 4xx status (422 bad field, 404 unknown index or request id, 409 two
model spaces, 413 body too large, 503 + Retry-After when nothing is routed or
loaded yet); an unexpected failure is a 500 with a request id and no
traceback. The service keeps serving after each of them.
"""

from __future__ import annotations

import errno
import logging
import math
import random
import re
import threading
import time
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence, TypeVar

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json
from pydantic.alias_generators import to_camel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.engine.drift import record_served_query
from controller.core.routing import interleaved, mirrored
from controller.engine.serving import (MAX_K, RoutedIndex, SearchOutcome, VersionPool, routing_unit, search,
                                       validate_k)
from controller.serve import shadow
from controller.errors import Conflict, ControllerError, InvalidInput, NotFound, NotReady
from controller.inputs import field_path
from controller.serve.limits import BodyLimit
from controller.serve.metrics import ServeMetrics
from controller.store import events as E
from controller.store.fs import Store

log = logging.getLogger("controller.serve")

#: Largest request body accepted (a 384-float vector is ~8 KiB of JSON).
DEFAULT_MAX_BODY = 1 * 2**20
#: Request ids remembered for feedback (oldest forgotten first).
REQUEST_MEMORY = 200_000
RETRY_AFTER_S = 5
#: errors that say the store cannot be written at all (so drift recording stops, said once)
READ_ONLY_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM)
#: Longest query text. Embedding models read a few hundred tokens of it at most; without a bound one
#: request of a megabyte kept a CPU busy for seconds (the hashing embedder: 2.3 s for 964 KB).
MAX_QUERY_CHARS = 8192


class Api(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class SearchRequest(Api):
    query: str | None = Field(default=None, max_length=MAX_QUERY_CHARS,
                              description=f"Query text, embedded with the routed version's model "
                                          f"(at most {MAX_QUERY_CHARS} characters).")
    vector: list[FiniteFloat] | None = Field(default=None, description="A query vector already in the routed "
                                             "version's space (then `model` is required).")
    model: str | None = Field(default=None, description="Fingerprint key of the vector's model "
                              "(the `model.key` a search response returns).")
    k: int = Field(default=10, ge=1, le=MAX_K, strict=True, description=f"Number of hits, 1-{MAX_K}.")
    key: str | None = Field(default=None, max_length=512,
                            description="Routing key (user or session id): the same key always hits the same "
                                        "version for a given weight.")


class HitOut(Api):
    id: str
    score: float
    rank: int


class ModelOut(Api):
    key: str
    fingerprint: dict[str, Any]


class SearchResponse(Api):
    request_id: str
    index: str
    version: str
    role: Literal["stable", "candidate"]
    model: ModelOut
    hits: list[HitOut]
    took_ms: float


#: A day: longer is a client's bug, and unbounded values overflow the dwell statistics.
MAX_DWELL_MS = 86_400_000


class FeedbackEvent(Api):
    type: Literal["click", "dwell", "skip", "complaint"]
    doc_id: str | None = Field(default=None, max_length=512)
    position: int | None = Field(default=None, ge=1, le=MAX_K, strict=True,
                                 description="1-based rank the user saw.")
    dwell_ms: FiniteFloat | None = Field(default=None, ge=0, le=MAX_DWELL_MS,
                                         description="Time on the document (dwell events only), at most a day.")


class FeedbackRequest(Api):
    request_id: str = Field(max_length=64, description="requestId of the search response.")
    events: list[FeedbackEvent] = Field(min_length=1, max_length=100)


class FeedbackResponse(Api):
    request_id: str
    accepted: int = Field(description="Events logged.")
    duplicates: int = Field(default=0, description="Events already logged for this search (the same type at "
                                                   "the same rank), answered but not logged again.")


class _Impression:
    __slots__ = ("index", "version", "role", "ids", "logged")

    def __init__(self, index: str, version: str, role: str, ids: list[str]) -> None:
        self.index, self.version, self.role, self.ids = index, version, role, ids
        # (type, rank or None) of the feedback logged: a client's retry, or a loop that posts the same
        # click a hundred times, counts once (clicksPerQuery and dwell are gate metrics)
        self.logged: set[tuple[str, int | None]] | None = None

    def first_time(self, kind: str, position: int | None) -> bool:
        """Whether this feedback is new for the search; remembers it."""
        logged = self.logged if self.logged is not None else set()
        self.logged = logged
        if (kind, position) in logged:
            return False
        logged.add((kind, position))
        return True


class ServeState:
    """What the handlers share: the pool, the event log, metrics and recent request ids."""

    def __init__(self, pool: VersionPool, log_: E.EventLog | None, metrics: ServeMetrics, record: bool) -> None:
        self.pool = pool
        self.events = log_
        self.metrics = metrics
        self.record = record
        self.requests: OrderedDict[str, _Impression] = OrderedDict()
        self.vectors: dict[tuple[str, str], list[Any]] = {}
        self.vlock = threading.Lock()
        self.mirror: shadow.Mirror | None = None  # setMirror's off-path queue, made with the event log

    def remember(self, request_id: str, impression: _Impression) -> None:
        self.requests[request_id] = impression
        if len(self.requests) > REQUEST_MEMORY:
            self.requests.popitem(last=False)

    def keep_vector(self, name: str, model_key: str, fingerprint: dict[str, Any], vector: Any) -> None:
        if self.record and vector.any():  # a zero row (text the model cannot embed) would skew the drift sample
            with self.vlock:
                kept = self.vectors.get((name, model_key))
                if kept is None:
                    kept = self.vectors[(name, model_key)] = (fingerprint, [])
                kept[1].append(vector[0])

    def record_vectors(self, _batch: list[dict[str, Any]] | None = None) -> None:
        """Offer the flushed window's query vectors to the drift reservoirs (one write per model).

        Keyed by the model's fingerprint, not by version: the reservoir is the model's, and the
        version that answered may be gone from the store by the time the window is flushed.
        """
        import numpy as np

        with self.vlock:
            pending, self.vectors = self.vectors, {}
        for (name, _key), (fingerprint, rows) in pending.items():
            try:
                record_served_query(self.pool.store, name, fingerprint, np.asarray(rows, dtype=np.float32))
            except OSError as exc:
                if exc.errno in READ_ONLY_ERRNOS:
                    self.record = False  # a read-only store: stop trying, say it once
                    log.warning("query vectors are not recorded for drift (%s); start with --no-record "
                                "to silence this", exc)
                else:  # e.g. a full disk: this window's vectors are lost, the next ones are tried
                    log.warning("query vectors of %s not recorded for drift this time: %s", name, exc)
            except ControllerError as exc:
                log.warning("query vectors of %s not recorded for drift this time: %s", name, exc)


def create_app(store_root: str | Path, indexes: list[str] | None = None, *, events_dir: str | Path | None = None,
               record: bool = True, max_body: int = DEFAULT_MAX_BODY, window_s: float = E.DEFAULT_WINDOW_S,
               poll_s: float | None = None, grace_s: float | None = None,
               retention: E.Retention = E.Retention()) -> FastAPI:
    """The service over ``store_root``; ``indexes`` limits it to some index names (default: all)."""
    store = Store(Path(store_root))
    pool_kwargs = {k: v for k, v in (("poll_s", poll_s), ("grace_s", grace_s)) if v is not None}
    pool = VersionPool(store, indexes, **pool_kwargs)
    metrics = ServeMetrics()
    state = ServeState(pool, None, metrics, record)
    state.events = E.EventLog(Path(events_dir) if events_dir else E.events_root(store.root), window_s=window_s,
                              retention=retention, on_flush=state.record_vectors)
    state.mirror = shadow.Mirror(state.events)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        pool.start()
        state.events.start()
        state.mirror.start()
        try:
            yield
        finally:
            pool.stop()
            state.mirror.stop()
            state.events.close()
            state.record_vectors()

    app = FastAPI(title="embedding-index-controller search", version="v1", lifespan=lifespan,
                  description="Sticky-routed search over the store's aliases, feedback capture and metrics. "
                              "See docs/serving.md.", **_no_native_telemetry())
    app.state.serve = state
    app.add_middleware(BodyLimit, max_body=max_body,
                       on_refuse=lambda path, status: _count_refused_body(state, path, status))
    _install_error_handlers(app, state)
    _install_routes(app, state)
    return app


#: The search body as OpenAPI documents it (the handler validates the raw bytes itself, see below).
_SEARCH_BODY = {"required": True, "content": {"application/json": {
    "schema": SearchRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")}}}


_FEEDBACK_BODY = {"required": True, "content": {"application/json": {
    "schema": FeedbackRequest.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")}}}

_Body = TypeVar("_Body", bound=BaseModel)


def parse_body(model: type[_Body], raw: bytes, content_type: str | None) -> _Body:
    """A request body validated by pydantic-core straight from the bytes, in one pass.

    FastAPI's own body handling parses the JSON into a Python tree with the json module and
    then validates that tree (about a third of the service's time per query for a 384-float
    vector). Refusals keep FastAPI's shape: a RequestValidationError whose locations start
    with "body", so the 422 names the same field as before.
    """
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    if not _is_json(content_type):
        raise RequestValidationError([{"type": "model_attributes_type", "loc": ("body",), "input": raw,
                                       "msg": "Input should be a valid dictionary or object to extract fields from "
                                              "(send Content-Type: application/json)"}])
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])}
                                      for e in exc.errors(include_url=False)]) from None


def event_position(i: int, event: FeedbackEvent, ids: Sequence[str]) -> int | None:
    """The rank the event is about, checked against what the search answered: feedback on a document or
    a rank the user was never shown would count as clicks and raise CTR and MRR."""
    where = f"events[{i}]"
    if event.dwell_ms is not None and event.type != "dwell":
        raise InvalidInput(f"dwellMs belongs to dwell events, not {event.type}", field=f"{where}.dwellMs",
                           value=event.dwell_ms)
    if event.type == "dwell" and event.dwell_ms is None:
        raise InvalidInput("a dwell event needs dwellMs", field=f"{where}.dwellMs")
    if event.type in ("click", "dwell") and event.doc_id is None and event.position is None:
        # placed past the last hit, it counted as a click on nothing and raised CTR
        raise InvalidInput(f"a {event.type} event names its document: docId or position", field=f"{where}.docId")
    if event.position is not None and event.position > len(ids):
        raise InvalidInput(f"position {event.position} is past the {len(ids)} hits the search answered",
                           field=f"{where}.position", value=event.position)
    if event.doc_id is None:
        return event.position
    if event.doc_id not in ids:
        raise InvalidInput("docId is not among the hits the search answered", field=f"{where}.docId",
                           value=event.doc_id)
    rank = ids.index(event.doc_id) + 1
    if event.position is not None and event.position != rank:
        raise InvalidInput(f"position {event.position} does not match docId {event.doc_id!r}, answered at "
                           f"rank {rank}", field=f"{where}.position", value=event.position)
    return rank


class _FastJSON(JSONResponse):
    """JSON encoded by pydantic-core: several times faster than the json module on float-heavy
    payloads. Only for payloads whose floats are finite (NaN would become null, not an error)."""

    def render(self, content: Any) -> bytes:
        return to_json(content)


class _DirectRoute(APIRoute):
    """Documented by OpenAPI from its signature like any route, but called directly per request.

    For ``endpoint(name, request)`` handlers that read their own body: FastAPI's per-request
    dependency solving and body handling cost about as much as the search of a small index.
    Errors still reach the app's exception handlers.
    """

    def get_route_handler(self) -> Any:
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            return await endpoint(request.path_params["name"], request)

        return handler


def _is_json(content_type: str | None) -> bool:
    """application/json or application/*+json, with any parameters (as FastAPI decides)."""
    if not content_type:
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


def _no_native_telemetry() -> dict[str, Any]:
    """FastAPI versions with built-in OpenTelemetry look up three global providers on every request;
    the service has its own Prometheus metrics and event log, so that is turned off where it exists."""
    import inspect

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    return {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}


def _error(status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status, headers=headers)


def _field_of(loc: tuple[Any, ...]) -> str:
    return field_path(loc[1:] if loc[:1] == ("body",) else loc) or "body"


def _install_error_handlers(app: FastAPI, state: ServeState) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            field, message = "body", "the body is not valid JSON"
        else:
            message = f"{field}: {first.get('msg', 'invalid')}"
            if "input" in first and not isinstance(first["input"], (dict, list)) and first.get("input") is not None:
                message += f" (got {repr(first['input'])[:80]})"
        _count_error(state, request, 422)
        return _error(422, message, field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), None, getattr(exc, "headers", None))

    @app.exception_handler(ControllerError)
    async def controller_error(request: Request, exc: ControllerError) -> JSONResponse:
        status, headers = 500, None
        if isinstance(exc, InvalidInput):
            status = 422
        elif isinstance(exc, NotFound):
            status = 404
        elif isinstance(exc, Conflict):
            status = 409
        elif isinstance(exc, NotReady):
            status, headers = 503, {"Retry-After": str(RETRY_AFTER_S)}
        _count_error(state, request, status)
        message = exc.reason if isinstance(exc, InvalidInput) else str(exc)
        return _error(status, message, getattr(exc, "field", None), headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        incident = uuid.uuid4().hex[:12]
        log.error("internal error %s on %s: %r", incident, request.url.path, exc, exc_info=exc)
        _count_error(state, request, 500)
        return _error(500, f"internal error (incident {incident}; the service log has the details)")


def _count_error(state: ServeState, request: Request, status: int) -> None:
    _count_refused(state, request.url.path, request.path_params.get("name"), status,
                   getattr(request.state, "version", None), getattr(request.state, "role", None))


_SEARCH_PATH = re.compile(r"/v1/indexes/([^/]+)/search")


def _count_refused_body(state: ServeState, path: str, status: int) -> None:
    """A body the size limit refused, before any route ran (its 413 counted as the handlers' are)."""
    match = _SEARCH_PATH.fullmatch(path)
    _count_refused(state, path, match.group(1) if match else None, status, None, None)


def _count_refused(state: ServeState, path: str, name: str | None, status: int, version: str | None,
                   role: str | None) -> None:
    if "/search" not in path:
        return  # errors, the metric and the log's error events, are refused or failed searches (docs/serving.md)
    served = name in state.pool.names()
    label = name if served else "unknown"
    state.metrics.requests.labels(label, version or "-", role or "-", str(status)).inc()
    state.metrics.errors.labels(label, version or "-", role or "-", str(status)).inc()
    if served and state.events is not None:
        state.events.append({"type": "error", "ts": time.time(), "index": name, "version": version, "role": role,
                             "status": status, "path": path})


def _answer(routed: RoutedIndex, body: SearchRequest) -> tuple[SearchOutcome, dict[str, Any] | None]:
    """The routed answer to one search, and the impression's interleave fields (None unless the query was
    team-draft interleaved: teams and source lists)."""
    if interleaved(routed.routing, key=body.key, draw=random.uniform(0, 100)):
        mixed = shadow.interleave(routed, text=body.query, vector=body.vector, model=body.model,
                                  k=validate_k(body.k), seed=uuid.uuid4().hex)
        if mixed is not None:
            return mixed
    return search(routed, text=body.query, vector=body.vector, model=body.model, k=body.k, key=body.key), None


def _install_routes(app: FastAPI, state: ServeState) -> None:
    pool, metrics = state.pool, state.metrics

    async def search_index(name: str, request: Request) -> JSONResponse:
        body = parse_body(SearchRequest, await request.body(), request.headers.get("content-type"))
        routed = pool.routed(name)
        try:
            if body.query is None:  # a vector: one index search (~1 ms), cheaper inline than a thread hop
                out, mixed_fields = _answer(routed, body)
            else:  # text is embedded first (a model, or a remote embedding server): off the event loop, so
                # that a slow embedding never holds up other requests or the health probes
                out, mixed_fields = await run_in_threadpool(_answer, routed, body)
        except Exception as exc:
            # attribute the refusal or failure to the version it was routed to (metrics and error events)
            request.state.version = getattr(exc, "version", None)
            request.state.role = getattr(exc, "role", None)
            raise
        request.state.version, request.state.role = out.version, out.role
        ids = out.ids
        state.remember(out.request_id, _Impression(name, out.version, out.role, ids))
        state.keep_vector(name, out.model_key, out.model, out.vector)
        state.events.append({"type": "impression", "ts": time.time(), "requestId": out.request_id, "index": name,
                             "version": out.version, "role": out.role, "model": out.model_key,
                             "bucket": None if out.bucket is None else round(out.bucket, 4),
                             "unit": out.unit or routing_unit(body.key), "k": out.k,
                             "ids": ids, "tookMs": round(out.took_ms, 3),
                             "input": "vector" if body.vector is not None else "text",
                             **(mixed_fields if mixed_fields is not None else {})})
        ok, latency = metrics.served(name, out.version, out.role)
        ok.inc()
        latency.observe(out.took_ms / 1000)
        # built by hand (same shape as SearchResponse, which documents it): validating and
        # re-serialising the response model costs more than the search on small indexes
        payload = {"requestId": out.request_id, "index": name, "version": out.version, "role": out.role,
                   "model": {"key": out.model_key, "fingerprint": out.model},
                   "hits": [{"id": i, "score": score if math.isfinite(score) else 0.0, "rank": rank}
                            for i, score, rank in zip(ids, out.scores, out.ranks or range(1, len(ids) + 1))],
                   "tookMs": round(out.took_ms, 3)}
        if mixed_fields is None and mirrored(routed.routing, out.version, key=body.key,
                                             draw=random.uniform(0, 100)):
            # setMirror: only queued here (never awaited); the response above is already final
            state.mirror.offer(routed, out, text=body.query, vector=body.vector, model=body.model)
        return _FastJSON(payload, headers={"X-Index-Version": out.version, "X-Request-Id": out.request_id})

    app.router.add_api_route(
        "/v1/indexes/{name}/search", search_index, methods=["POST"], route_class_override=_DirectRoute,
        response_model=SearchResponse, response_model_by_alias=True, openapi_extra={"requestBody": _SEARCH_BODY},
        responses={404: {"description": "unknown index"}, 409: {"description": "vector of another model"},
                   413: {"description": "body too large"}, 422: {"description": "invalid field"},
                   503: {"description": "no version routed or loaded yet (Retry-After)"}})

    async def feedback(name: str, request: Request) -> JSONResponse:
        # the body is read here, not by FastAPI, whose reader turns the size limit's 413 into a 400
        body = parse_body(FeedbackRequest, await request.body(), request.headers.get("content-type"))
        if name not in pool.names():
            pool.routed(name)  # raises the 404 / 503 that names the index
        impression = state.requests.get(body.request_id)
        if impression is None or impression.index != name:
            raise NotFound(f"unknown requestId {body.request_id!r} for {name}: feedback must name the requestId "
                           "of a search this service answered (ids are kept for the last "
                           f"{REQUEST_MEMORY} searches, in memory)")
        request.state.version, request.state.role = impression.version, impression.role
        positions = [event_position(i, event, impression.ids) for i, event in enumerate(body.events)]
        now = time.time()
        accepted = 0
        for event, position in zip(body.events, positions):
            if not impression.first_time(event.type, position):
                continue
            accepted += 1
            state.events.append({"type": event.type, "ts": now, "requestId": body.request_id, "index": name,
                                 "version": impression.version, "role": impression.role, "docId": event.doc_id,
                                 "position": position, "dwellMs": event.dwell_ms})
            metrics.feedback.labels(name, impression.version, impression.role, event.type).inc()
        return JSONResponse(FeedbackResponse(request_id=body.request_id, accepted=accepted,
                                             duplicates=len(body.events) - accepted).model_dump(by_alias=True))

    app.router.add_api_route(
        "/v1/indexes/{name}/feedback", feedback, methods=["POST"], route_class_override=_DirectRoute,
        response_model=FeedbackResponse, response_model_by_alias=True,
        openapi_extra={"requestBody": _FEEDBACK_BODY},
        responses={404: {"description": "unknown index or request id"}, 413: {"description": "body too large"},
                   422: {"description": "invalid field"}})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready, waiting = pool.ready()
        loaded = [f"{n}/{v}" for n, v in pool.loaded_versions()]
        return JSONResponse({"ready": ready, "waiting": waiting, "problems": pool.problems(), "loaded": loaded},
                            status_code=200 if ready else 503,
                            headers=None if ready else {"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/v1/indexes")
    async def list_indexes() -> dict[str, Any]:
        out = {}
        for name in pool.names():
            routed = pool.snapshot(name)
            if routed is None:
                continue
            r = routed.routing
            out[name] = {"stable": r.stable, "candidate": r.candidate, "weight": r.weight,
                         "models": {v: lv.model_key for v, lv in routed.versions.items()}}
        return {"indexes": out}

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.events_written.set(state.events.written)
        metrics.events_failed.set(state.events.write_errors)
        metrics.loaded.set(len(pool.loaded_versions()))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

