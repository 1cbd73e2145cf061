"""Webhook notifications on rollout transitions, delivered off the reconcile path.

Hooks.on_transition calls Notifier.__call__ in the reconciling thread; that
only dedupes and enqueues. A daemon thread POSTs JSON with urllib and retries
failures with exponential backoff, so a slow or dead receiver never blocks a
reconcile. A transition that repeats the last notified state of an index
(same event, version, weight and commit) is not sent again; the keys are kept
in <store>/gitops/notified.json so one-shot runs (cron, CI) dedupe too.

Targets: a global URL (--webhook or $CONTROLLER_WEBHOOK) and/or a per-index URL
from the manifest annotation `indexops.dev/webhook`.

Target policy (an annotation in a pull request must not reach internal endpoints):
http and https only, with a host; loopback, link-local (cloud metadata at
169.254.169.254), unspecified, multicast and reserved addresses are refused
unless --allow-private-webhooks or $CONTROLLER_ALLOW_PRIVATE_WEBHOOKS=1 allows
them. The rule is checked on the URL when it is configured (a bad global URL is
a one-line error at start-up; a bad annotation is logged and ignored) and again
on every address the host resolves to, at connect time, on the very address the
socket connects to (so DNS that later answers 127.0.0.1 is refused too).
Redirects are not followed. Private RFC 1918 ranges are allowed: in-cluster
receivers live there; restrict them with the chart's NetworkPolicy.

Time bounds: each attempt has a TIMEOUT_S connect/read timeout; close() waits
at most CLOSE_TIMEOUT_S for pending posts and then drops them with a warning, so
a dead or slow receiver delays exit by at most that. The worker thread catches
everything per delivery: a delivery that raises is dropped, never the thread.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import os
import queue
import socket
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from controller.errors import InvalidInput
from controller.manifest.load import LoadedManifest
from controller.store import atomic

WEBHOOK_ENV = "CONTROLLER_WEBHOOK"
ALLOW_PRIVATE_ENV = "CONTROLLER_ALLOW_PRIVATE_WEBHOOKS"
WEBHOOK_ANNOTATION = "indexops.dev/webhook"
TIMEOUT_S = 5.0  # per attempt: connect, then each read
CLOSE_TIMEOUT_S = 10.0  # the most a pending notification may delay exit
SCHEMES = ("http", "https")
MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.5
KEYS_KEPT = 50  # per index: enough to recognise recent states, small enough to read whole


class WebhookRefused(Exception):
    """A target the policy refuses: never retried."""


def allow_private_default() -> bool:
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def refused_address(address: str) -> str | None:
    """Why an IP address is not a webhook target without --allow-private-webhooks, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None  # a host name: checked on each resolved address at connect time
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, hit in (("loopback", ip.is_loopback), ("link-local", ip.is_link_local),
                      ("unspecified", ip.is_unspecified), ("multicast", ip.is_multicast),
                      ("reserved", ip.is_reserved)):
        if hit:
            return f"{address} is a {kind} address"
    return None


def url_problem(url: str, allow_private: bool) -> str | None:
    """Why `url` is not an acceptable webhook target, or None. No network access."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # raises on a port that is not a number or out of range
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme.lower() not in SCHEMES:
        shown = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        return f"{shown}: only http:// and https:// webhooks are allowed"
    host = parts.hostname
    if not host:
        return "no host in the URL"
    if port == 0:
        return "port 0"
    if not allow_private:
        if host.rstrip(".").lower() == "localhost" or host.rstrip(".").lower().endswith(".localhost"):
            return f"{host} is a loopback host; pass --allow-private-webhooks to allow it"
        why = refused_address(host)
        if why:
            return f"{why}; pass --allow-private-webhooks to allow it"
    return None


def check_webhook(url: str, allow_private: bool, field: str = "--webhook") -> str:
    """The URL, or InvalidInput (exit 2) with a one-line reason."""
    problem = url_problem(url, allow_private)
    if problem:
        raise InvalidInput(f"webhook URL {url!r} refused: {problem}", field=field)
    return url


def webhook_targets(loaded: Iterable[LoadedManifest], allow_private: bool | None = None,
                    log: Callable[[str], None] | None = None) -> dict[str, str]:
    """Per-index URLs from the `indexops.dev/webhook` annotation; refused ones are logged and left out."""
    allow = allow_private_default() if allow_private is None else allow_private
    out = {}
    for item in loaded:
        url = item.manifest.metadata.annotations.get(WEBHOOK_ANNOTATION)
        if not url:
            continue
        problem = url_problem(str(url), allow)
        if problem:
            (log or _stderr)(f"warning: index {item.name}: annotation {WEBHOOK_ANNOTATION}={url!r} refused: "
                             f"{problem}; no notifications go there")
            continue
        out[item.name] = str(url)
    return out


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def global_webhook(arg: str | None) -> str | None:
    return arg or os.environ.get(WEBHOOK_ENV) or None


def guarded_connection(allow_private: bool) -> Callable[..., socket.socket]:
    """socket.create_connection that refuses, per resolved address, what the policy refuses.

    http.client resolves the host itself; replacing its `_create_connection` checks the
    address actually connected to, which a check before the request cannot (DNS may change)."""

    def connect(address: tuple[str, int], timeout: float = TIMEOUT_S, source_address: Any = None
                ) -> socket.socket:
        host, port = address
        last: OSError | None = None
        for family, kind, proto, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
            why = None if allow_private else refused_address(str(sockaddr[0]))
            if why:
                raise WebhookRefused(f"{host} resolves to {why}; pass --allow-private-webhooks to allow it")
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise last or OSError(f"{host} did not resolve to any address")

    return connect


def post_json(url: str, body: bytes, allow_private: bool, timeout: float = TIMEOUT_S) -> int:
    """POST `body` to `url` (no redirects followed); the HTTP status. Raises OSError, WebhookRefused."""
    problem = url_problem(url, allow_private)
    if problem:
        raise WebhookRefused(problem)
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme.lower() == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname, parts.port, timeout=timeout)
    conn._create_connection = guarded_connection(allow_private)  # type: ignore[attr-defined]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                       "User-Agent": "indexops-controller"})
        response = conn.getresponse()
        response.read(65536)  # drain a little so the connection closes cleanly; the body is not used
        return response.status
    finally:
        conn.close()


def dedupe_key(name: str, event: dict[str, Any]) -> str:
    weight = event.get("weight")
    key = [name, event.get("event"), event.get("version"), None if weight is None else float(weight),
           event.get("commit")]
    if event.get("step") is not None:  # two step transitions may keep the same weight (setMirror, pause)
        key.append([event["step"], event.get("stepStartedAt")])
    return json.dumps(key)


@dataclass
class _Delivery:
    url: str
    payload: dict[str, Any]
    attempt: int = 0
    not_before: float = 0.0


@dataclass
class Notifier:
    """Callable as Hooks.on_transition. Call close() before exiting to flush pending posts."""

    global_url: str | None = None
    per_index: dict[str, str] = field(default_factory=dict)
    state_file: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the commit, merged into every payload
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)
    sleep: Callable[[float], None] = time.sleep
    first_backoff: float = FIRST_BACKOFF_S
    allow_private: bool = False  # loopback/link-local targets (tests, a sidecar receiver)

    def __post_init__(self) -> None:
        self._queue: queue.Queue[_Delivery | None] = queue.Queue()
        self._keys: dict[str, list[str]] = (atomic.read_json(self.state_file) or {}) if self.state_file else {}
        self._gates: dict[str, list[dict[str, Any]]] = {}
        self._pending = 0
        self._idle = threading.Condition()
        self._thread: threading.Thread | None = None
        self.sent: list[dict[str, Any]] = []  # delivered payloads, for callers and tests
        self.failed: list[dict[str, Any]] = []

    def retarget(self, loaded: Iterable[LoadedManifest], extra: dict[str, Any] | None = None) -> None:
        """Per-index URLs and payload extras of the manifests about to be reconciled."""
        self.per_index = webhook_targets(loaded, self.allow_private, self.log)
        self.extra = dict(extra or {})

    @property
    def enabled(self) -> bool:
        return bool(self.global_url or self.per_index)

    def __call__(self, name: str, event: dict[str, Any]) -> None:
        """Hooks.on_transition: dedupe and enqueue; never raises, never blocks on the network."""
        event = {**event, **{k: v for k, v in self.extra.items() if k not in event}}
        if event.get("gates"):
            self._gates[name] = event["gates"]  # later weight/alias events carry the gate values
        urls = {u for u in (self.global_url, self.per_index.get(name)) if u}
        if not urls:
            return
        key = dedupe_key(name, event)
        seen = self._keys.setdefault(name, [])
        if key in seen:
            return
        seen.append(key)
        del seen[:-KEYS_KEPT]
        self._save_keys()
        payload = {"index": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                   "gates": self._gates.get(name, []), **event}
        for url in sorted(urls):
            self._enqueue(_Delivery(url, payload))

    def _save_keys(self) -> None:
        if self.state_file is None:
            return
        try:
            atomic.write_json(self.state_file, self._keys)
        except OSError as exc:  # dedupe is best effort; losing it must not stop a reconcile
            self.log(f"warning: cannot save webhook dedupe state {self.state_file}: {exc}")

    def _enqueue(self, delivery: _Delivery) -> None:
        with self._idle:
            self._pending += 1
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker, name="webhook", daemon=True)
            self._thread.start()
        self._queue.put(delivery)

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._deliver(item)
            except Exception as exc:  # noqa: BLE001 - the thread outlives any one bad delivery
                self.log(f"warning: webhook {item.url}: dropped the {item.payload.get('event')} notification "
                         f"for {item.payload.get('index')}: {type(exc).__name__}: {exc}")
                self.failed.append(item.payload)
                self._done()

    def _deliver(self, item: _Delivery) -> None:
        wait = item.not_before - time.monotonic()
        if wait > 0:
            self.sleep(wait)
        try:
            ok = self._post(item)
        except WebhookRefused as exc:  # policy, not a network blip: retrying cannot help
            self.log(f"warning: webhook {item.url} refused: {exc}; dropped the "
                     f"{item.payload.get('event')} notification for {item.payload.get('index')}")
            self.failed.append(item.payload)
            self._done()
            return
        if ok:
            self._done()
            return
        item.attempt += 1
        if item.attempt >= MAX_ATTEMPTS:
            self.log(f"warning: webhook {item.url} failed {MAX_ATTEMPTS} times; dropped the "
                     f"{item.payload.get('event')} notification for {item.payload.get('index')}")
            self.failed.append(item.payload)
            self._done()
            return
        item.not_before = time.monotonic() + self.first_backoff * 2 ** (item.attempt - 1)
        self._queue.put(item)

    def _post(self, item: _Delivery) -> bool:
        body = json.dumps(item.payload, default=str).encode()
        try:
            status = post_json(item.url, body, self.allow_private)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.log(f"warning: webhook {item.url} attempt {item.attempt + 1} failed: {exc}")
            return False
        if not 200 <= status < 300:
            self.log(f"warning: webhook {item.url} attempt {item.attempt + 1} answered HTTP {status}")
            return False
        self.sent.append(item.payload)
        return True

    def _done(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued post is delivered or dropped; returns whether all finished."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Flush for at most `timeout` seconds, then give up on what is left (the thread is a daemon)."""
        if self._pending and not self.flush(timeout):
            self.log(f"warning: {self._pending} webhook notification(s) still pending after {timeout:g}s; "
                     "dropped at exit")
        if self._thread is not None:
            self._queue.put(None)


def make_notifier(store_root: Path, url: str | None, loaded: Iterable[LoadedManifest] = (),
                  extra: dict[str, Any] | None = None, allow_private: bool | None = None) -> Notifier:
    """A notifier for the global URL (refused at once with InvalidInput) and the manifests' annotations."""
    allow = allow_private_default() if allow_private is None else allow_private
    target = global_webhook(url)
    if target:
        check_webhook(target, allow, "--webhook" if url else f"${WEBHOOK_ENV}")
    return Notifier(global_url=target, per_index=webhook_targets(loaded, allow),
                    state_file=Path(store_root) / "gitops" / "notified.json", extra=dict(extra or {}),
                    allow_private=allow)
