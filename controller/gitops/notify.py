"""Webhook notifications on rollout transitions, delivered off the reconcile path.

Hooks.on_transition calls Notifier.__call__ in the reconciling thread; that
only dedupes and enqueues. A daemon thread POSTs JSON with urllib and retries
failures with exponential backoff, so a slow or dead receiver never blocks a
reconcile. A transition that repeats the last notified state of an index
(same event, version, weight and commit) is not sent again; the keys are kept
in <store>/gitops/notified.json so one-shot runs (cron, CI) dedupe too.

Targets: a global URL (--webhook or $CONTROLLER_WEBHOOK) and/or a per-index URL
from the manifest annotation `indexops.dev/webhook`.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from controller.manifest.load import LoadedManifest
from controller.store import atomic

WEBHOOK_ENV = "CONTROLLER_WEBHOOK"
WEBHOOK_ANNOTATION = "indexops.dev/webhook"
TIMEOUT_S = 5.0
MAX_ATTEMPTS = 5
FIRST_BACKOFF_S = 0.5
KEYS_KEPT = 50  # per index: enough to recognise recent states, small enough to read whole


def webhook_targets(loaded: Iterable[LoadedManifest]) -> dict[str, str]:
    """Per-index URLs from the `indexops.dev/webhook` annotation."""
    out = {}
    for item in loaded:
        url = item.manifest.metadata.annotations.get(WEBHOOK_ANNOTATION)
        if url:
            out[item.name] = url
    return out


def global_webhook(arg: str | None) -> str | None:
    return arg or os.environ.get(WEBHOOK_ENV) or None


def dedupe_key(name: str, event: dict[str, Any]) -> str:
    weight = event.get("weight")
    return json.dumps([name, event.get("event"), event.get("version"),
                       None if weight is None else float(weight), event.get("commit")])


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
        self.per_index = webhook_targets(loaded)
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
            wait = item.not_before - time.monotonic()
            if wait > 0:
                self.sleep(wait)
            if self._post(item):
                self._done()
                continue
            item.attempt += 1
            if item.attempt >= MAX_ATTEMPTS:
                self.log(f"warning: webhook {item.url} failed {MAX_ATTEMPTS} times; dropped the "
                         f"{item.payload.get('event')} notification for {item.payload.get('index')}")
                self.failed.append(item.payload)
                self._done()
                continue
            item.not_before = time.monotonic() + self.first_backoff * 2 ** (item.attempt - 1)
            self._queue.put(item)

    def _post(self, item: _Delivery) -> bool:
        body = json.dumps(item.payload, default=str).encode()
        request = urllib.request.Request(item.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "indexops-controller"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                ok = 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            self.log(f"warning: webhook {item.url} attempt {item.attempt + 1} failed: {exc}")
            return False
        if ok:
            self.sent.append(item.payload)
        return ok

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

    def close(self, timeout: float = 30.0) -> None:
        if self._pending:
            self.flush(timeout)
        if self._thread is not None:
            self._queue.put(None)


def make_notifier(store_root: Path, url: str | None, loaded: Iterable[LoadedManifest] = (),
                  extra: dict[str, Any] | None = None) -> Notifier:
    return Notifier(global_url=global_webhook(url), per_index=webhook_targets(loaded),
                    state_file=Path(store_root) / "gitops" / "notified.json", extra=dict(extra or {}))
