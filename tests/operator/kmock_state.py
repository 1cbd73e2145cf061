"""A more faithful Kubernetes API for kopf, built on kmock 0.8's KubernetesEmulator.

Plain kmock merges every write into its objects and stops there. kopf (and any
real controller) relies on more: this subclass adds

- metadata.uid, resourceVersion (a global counter), generation (bumped on spec
  changes only) and creationTimestamp; generateName on create;
- optimistic concurrency: 409 Conflict when a write carries a stale
  resourceVersion, 409 AlreadyExists on a duplicate create;
- JSON patch (RFC 6902) with `test` ops (422 when one fails), merge patch
  (RFC 7386, null deletes) and PUT replace;
- a status subresource: PATCH/PUT on /status changes only .status, writes to
  the main resource leave .status alone (as with `subresources: {status: {}}`);
- deletion with finalizers: deletionTimestamp first, removal once the last
  finalizer is gone; no-op writes bump nothing and emit no event;
- fault injection (`fail(...)`: the next N matching requests get an HTTP error,
  optionally with headers such as Retry-After, optionally after a delay, as a hung
  API server), `drop_watches()`, which ends every open watch stream as an API
  server restart would, and `expire_watches()`, which sends the in-stream
  `ERROR 410 Gone` a real server sends when a watch's resourceVersion expired;
- UID preconditions: a write (or a delete's preconditions) naming another uid
  than the stored object's gets 409 Conflict, as when an object was deleted and
  recreated under the same name.

Reads (get, list, watch) still go through kmock's own emulator code over the
same object store, so `kmock.objects[...]` shows every stored version.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import itertools
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp.web
import attrs
import kmock
from kmock._internal import apps, enums, rendering

DROP = {"type": "__DROP__"}
GONE = {"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410,
                                    "reason": "Expired", "message": "too old resource version"}}


@dataclass
class Fault:
    method: str | None  # GET, PATCH, ...; None: any
    path: re.Pattern[str]
    status: int
    times: int
    watch: bool | None = None  # True: only watch requests; False: never watch requests
    seen: int = 0
    headers: dict[str, str] | None = None  # e.g. Retry-After with a 429
    delay: float = 0.0  # answer only after this many seconds: a hung API server
    hits: list[float] | None = None  # monotonic times of the matching requests


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


class PatchTestFailed(Exception):
    pass


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902 (add, remove, replace, test): enough for kopf's finalizer and status patches."""
    doc = copy.deepcopy(doc)
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent.setdefault(part, {})
        last = parts[-1] if parts else None
        kind = op["op"]
        if kind == "test":
            current = parent[int(last)] if isinstance(parent, list) else parent.get(last)
            if current != op.get("value"):
                raise PatchTestFailed(f"test failed at {op['path']}: {current!r} != {op.get('value')!r}")
        elif kind == "remove":
            if isinstance(parent, list):
                parent.pop(int(last))
            else:
                parent.pop(last)
        elif kind in ("add", "replace"):
            if isinstance(parent, list):
                if last == "-":
                    parent.append(op["value"])
                elif kind == "add":
                    parent.insert(int(last), op["value"])
                else:
                    parent[int(last)] = op["value"]
            else:
                parent[last] = op["value"]
        else:
            raise ValueError(f"unsupported JSON patch op {kind!r}")
    return doc


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, reason: str, message: str) -> kmock.KubernetesError:
    return kmock.KubernetesError(status=status, reason=reason, message=message, details={})


@attrs.define(kw_only=True)
class StatefulEmulator(kmock.KubernetesEmulator):
    _rv: Any = attrs.field(factory=lambda: itertools.count(1), init=False)
    _last_rv: int = attrs.field(default=0, init=False)
    faults: list[Fault] = attrs.field(factory=list, init=False)
    injected: list[tuple[str, str, int]] = attrs.field(factory=list, init=False)
    # every request: (monotonic time, METHOD, path, is a watch)
    seen: list[tuple[float, str, str, bool]] = attrs.field(factory=list, init=False)

    # ---- test controls ------------------------------------------------------------------------
    def fail(self, method: str | None, path: str, status: int, times: int = 1, *,
             watch: bool | None = None, headers: dict[str, str] | None = None, delay: float = 0.0) -> Fault:
        fault = Fault(method.upper() if method else None, re.compile(path), status, times, watch, headers=headers,
                      delay=delay, hits=[])
        self.faults.append(fault)
        return fault

    async def expire_watches(self) -> None:
        """Every open watch gets ERROR 410 Gone and ends: the client must list again."""
        for bus in list(self._buses.values()):
            await bus.put(copy.deepcopy(GONE))

    async def drop_watches(self) -> None:
        for bus in list(self._buses.values()):
            await bus.put(dict(DROP))

    def body(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        for (res, ns, nm), obj in self.objects.items():
            if nm == name and ns == namespace and res.plural == resource and not obj.deleted:
                return copy.deepcopy(obj.raw)
        return None

    # ---- request handling ---------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._last_rv = next(self._rv)
        return str(self._last_rv)

    def _take_fault(self, request: rendering.Request) -> Fault | None:
        is_watch = request.action == enums.action.WATCH
        for fault in self.faults:
            if fault.seen >= fault.times:
                continue
            if fault.method and fault.method != str(request.method.value if hasattr(request.method, "value")
                                                     else request.method).upper():
                continue
            if fault.watch is not None and fault.watch != is_watch:
                continue
            if fault.path.search(request.url.path):
                fault.seen += 1
                if fault.hits is not None:
                    fault.hits.append(time.monotonic())
                return fault
        return None

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        method_name = str(getattr(request.method, "value", request.method)).upper()
        self.seen.append((time.monotonic(), method_name, request.url.path, request.action == enums.action.WATCH))
        fault = self._take_fault(request)
        if fault is not None:
            self.injected.append((str(request.method), request.url.path, fault.status))
            if fault.delay:
                await asyncio.sleep(fault.delay)
            body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": fault.status,
                    "reason": "InjectedFault", "message": f"injected HTTP {fault.status} for a test"}
            return aiohttp.web.json_response(body, status=fault.status, headers=fault.headers or {})
        method = str(getattr(request.method, "value", request.method)).upper()
        if request.resource is None or method not in ("POST", "PATCH", "PUT", "DELETE"):
            return await apps.RawHandler._handle(self, request)  # reads: kmock's emulator over our store
        async with self._lock:
            status, obj, events = self._mutate(request, method)
        for event in events:
            await self._buses[request.resource].put(event)
        return aiohttp.web.json_response(obj, status=status)

    def _mutate(self, request: rendering.Request, method: str) -> tuple[int, dict[str, Any], list[dict]]:
        if method == "POST":
            return self._create(request)
        key = (request.resource, request.namespace, request.name)
        obj = self._objects[key] if key in self._objects else None
        if obj is None or obj.deleted:
            raise _error(404, "NotFound", f"{request.resource.plural} {request.name!r} not found")
        old = copy.deepcopy(obj.raw)
        if method == "DELETE":
            self._check_delete_preconditions(request, old)
            return self._delete(key, old)
        new = self._written(request, method, old)
        meta, old_meta = new["metadata"], old["metadata"]
        for fixed in ("uid", "creationTimestamp", "deletionTimestamp", "generation", "resourceVersion",
                      "name", "namespace"):
            if fixed in old_meta:
                meta[fixed] = old_meta[fixed]
            else:
                meta.pop(fixed, None)
        if new == old:
            return 200, old, []  # a no-op write changes nothing, not even the resourceVersion
        if new.get("spec") != old.get("spec"):
            meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self._next_rv()
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            obj.create(new)
            obj.delete()
            return 200, new, [{"type": "DELETED", "object": new}]
        obj.create(new)  # appends a version: kmock keeps the history for assertions
        return 200, new, [{"type": "MODIFIED", "object": new}]

    def _written(self, request: rendering.Request, method: str, old: dict[str, Any]) -> dict[str, Any]:
        """The object after the write, before the server-owned fields are restored."""
        data = request.data if request.data is not None else json.loads(request.body or b"null")
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip()
        sent_rv = None
        if method == "PUT":
            result = copy.deepcopy(data)
            sent_rv = (data.get("metadata") or {}).get("resourceVersion")
        elif ctype == "application/json-patch+json":
            try:
                result = json_patch(old, data)
            except PatchTestFailed as exc:
                raise _error(422, "Invalid", str(exc)) from exc
        else:  # merge-patch and strategic-merge-patch (close enough for these objects)
            result = merge_patch(old, data)
            sent_rv = ((data or {}).get("metadata") or {}).get("resourceVersion")
        sent_uid = ((data or {}).get("metadata") or {}).get("uid") if isinstance(data, dict) else None
        if sent_uid is not None and sent_uid != old["metadata"].get("uid"):
            raise _error(409, "Conflict", f"Precondition failed: UID in precondition: {sent_uid}, "
                                          f"UID in object meta: {old['metadata'].get('uid')}")
        if sent_rv is not None and str(sent_rv) != old["metadata"].get("resourceVersion"):
            raise _error(409, "Conflict", f"the object has been modified; resourceVersion {sent_rv} is stale "
                                          f"(now {old['metadata'].get('resourceVersion')})")
        result.setdefault("metadata", {})
        if request.subresource == "status":
            fresh = copy.deepcopy(old)
            if "status" in result:
                fresh["status"] = result["status"]
            else:
                fresh.pop("status", None)
            return fresh
        if "status" in old:
            result["status"] = old["status"]  # the main resource ignores status (status subresource)
        else:
            result.pop("status", None)
        return result

    def _create(self, request: rendering.Request) -> tuple[int, dict[str, Any], list[dict]]:
        obj = copy.deepcopy(request.data)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        namespace = request.namespace or meta.get("namespace")
        if namespace:
            meta["namespace"] = namespace
        key = (request.resource, namespace, meta["name"])
        if key in self._objects and not self._objects[key].deleted:
            raise _error(409, "AlreadyExists", f"{request.resource.plural} {meta['name']!r} already exists")
        meta.update(uid=str(uuid.uuid4()), resourceVersion=self._next_rv(), generation=1,
                    creationTimestamp=_now())
        obj.pop("status", None)
        self._objects[key] = obj
        return 201, obj, [{"type": "ADDED", "object": obj}]

    def _check_delete_preconditions(self, request: rendering.Request, old: dict[str, Any]) -> None:
        try:
            data = request.data if request.data is not None else json.loads(request.body or b"null")
        except ValueError:
            data = None
        pre = (data or {}).get("preconditions") or {} if isinstance(data, dict) else {}
        meta = old["metadata"]
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise _error(409, "Conflict", f"Precondition failed: UID in precondition: {pre['uid']}, "
                                          f"UID in object meta: {meta.get('uid')}")
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta.get("resourceVersion"):
            raise _error(409, "Conflict", f"Precondition failed: ResourceVersion in precondition: "
                                          f"{pre['resourceVersion']}, in object meta: {meta.get('resourceVersion')}")

    def _delete(self, key: Any, old: dict[str, Any]) -> tuple[int, dict[str, Any], list[dict]]:
        obj = self._objects[key]
        meta = old["metadata"]
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return 200, old, []
            meta["deletionTimestamp"] = _now()
            meta["resourceVersion"] = self._next_rv()
            obj.create(old)
            return 200, old, [{"type": "MODIFIED", "object": old}]
        obj.delete()
        return 200, old, [{"type": "DELETED", "object": old}]

    # ---- reads --------------------------------------------------------------------------------
    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        payload = await super()._serve_list(request)
        payload["metadata"]["resourceVersion"] = str(self._last_rv)
        return payload

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""  # send the headers now: the stream is open even if nothing happens
        bus = self._buses[request.resource]
        async with self._lock:
            marker = await bus.mark()
            snapshot = [obj.raw for (res, ns, _), obj in self._objects.items()
                        if res == request.resource and not obj.deleted
                        and (request.namespace is None or ns == request.namespace)]
        try:
            for raw in snapshot:
                yield {"type": "ADDED", "object": raw}
            async for event in bus.stream(since=marker):
                if event.get("type") == DROP["type"]:
                    return  # the stream ends: the client must re-list and watch again
                if event.get("type") == "ERROR":
                    yield event
                    return  # a real server closes the stream after an ERROR event
                namespace = event["object"].get("metadata", {}).get("namespace")
                if request.namespace is None or namespace == request.namespace:
                    yield event
        finally:
            await bus.unmark(marker)
