"""The append-only event log of the search service: impressions, feedback and errors.

Layout: ``<events root>/<index>/segment-<UTC start stamp>-<host>-<pid>.jsonl`` (the
events root defaults to ``<store>/events``), one JSON object per line.

Durability contract (docs/serving.md): `append` only queues the record; a
background flusher writes the queue every ``window_s`` seconds (default 1 s),
then flushes and fsyncs the segment. A SIGKILL therefore loses at most the
records of the last window; a write cut in the middle leaves a torn last line,
which readers skip. Segments rotate at ``segment_bytes`` or ``segment_age_s``;
whole segments are deleted past ``retain_bytes`` (per index) or
``retain_age_s``. The newest segment is never deleted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

log = logging.getLogger("controller.events")

DEFAULT_WINDOW_S = 1.0
DEFAULT_SEGMENT_BYTES = 64 * 2**20
DEFAULT_SEGMENT_AGE_S = 3600.0
DEFAULT_RETAIN_BYTES = 1024 * 2**20
DEFAULT_RETAIN_AGE_S = 7 * 86400.0


def events_root(store_root: Path) -> Path:
    return Path(store_root) / "events"


@dataclass(frozen=True)
class Retention:
    segment_bytes: int = DEFAULT_SEGMENT_BYTES
    segment_age_s: float = DEFAULT_SEGMENT_AGE_S
    retain_bytes: int = DEFAULT_RETAIN_BYTES
    retain_age_s: float = DEFAULT_RETAIN_AGE_S


class _Segment:
    """The open segment of one index."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        self.path = directory / f"segment-{stamp}-{socket.gethostname()}-{os.getpid()}.jsonl"
        self.handle = open(self.path, "ab")
        self.opened = time.time()
        self.size = self.handle.tell()

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.size += len(data)

    def sync(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()


class EventLog:
    """Queue events in memory and let one background thread write, fsync, rotate and retire segments."""

    def __init__(self, root: Path, *, window_s: float = DEFAULT_WINDOW_S, retention: Retention = Retention(),
                 on_flush: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.root = Path(root)
        self.window_s = window_s
        self.retention = retention
        self.on_flush = on_flush
        self._queue: list[dict[str, Any]] = []
        self._qlock = threading.Lock()
        self._segments: dict[str, _Segment] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0
        self.write_errors = 0

    def append(self, record: dict[str, Any]) -> None:
        """Queue one event (it must carry ``index``); cheap enough for the request path."""
        with self._qlock:
            self._queue.append(record)

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="event-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.window_s):
            self.flush()
        self.flush()

    def flush(self) -> int:
        """Write every queued event, fsync the touched segments; returns how many were written."""
        with self._qlock:
            batch, self._queue = self._queue, []
        if not batch:
            return 0
        by_index: dict[str, list[bytes]] = {}
        for record in batch:
            by_index.setdefault(str(record["index"]), []).append(
                (json.dumps(record, separators=(",", ":"), default=_plain) + "\n").encode())
        for name, lines in by_index.items():
            try:
                segment = self._segment(name)
                segment.write(b"".join(lines))
                segment.sync()
                self.written += len(lines)
            except OSError as exc:  # a full disk must not stop serving; the count shows in /metrics
                self.write_errors += len(lines)
                log.error("cannot write %d events of %s: %s", len(lines), name, exc)
        if self.on_flush is not None:
            try:
                self.on_flush(batch)
            except Exception as exc:  # noqa: BLE001 - a hook must never stop the flusher
                log.warning("event flush hook failed: %s", exc)
        return len(batch)

    def _segment(self, name: str) -> _Segment:
        segment = self._segments.get(name)
        r = self.retention
        if segment is not None and (segment.size >= r.segment_bytes or time.time() - segment.opened >= r.segment_age_s):
            segment.close()
            segment = None
        if segment is None:
            segment = _Segment(self.root / name)
            self._segments[name] = segment
            retire(self.root / name, r, keep=segment.path)
        return segment

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        else:
            self.flush()
        for segment in self._segments.values():
            segment.close()
        self._segments.clear()


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def segments(directory: Path) -> list[Path]:
    """Segments in time order (their names start with the UTC stamp of their first write)."""
    return sorted(directory.glob("segment-*.jsonl")) if directory.is_dir() else []


def retire(directory: Path, retention: Retention, *, keep: Path | None = None,
           now: float | None = None) -> list[Path]:
    """Delete the oldest whole segments past the age or total-size budget (never ``keep``)."""
    now = time.time() if now is None else now
    files = [p for p in segments(directory) if p != keep]
    removed = []
    total = sum(p.stat().st_size for p in files) + (keep.stat().st_size if keep and keep.exists() else 0)
    for path in files:
        st = path.stat()
        if now - st.st_mtime > retention.retain_age_s or total > retention.retain_bytes:
            total -= st.st_size
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_events(root: Path, name: str, *, since: float | None = None) -> Iterator[dict[str, Any]]:
    """Every readable event of one index (``ts`` >= since when given); torn or corrupt lines skipped."""
    for path in segments(Path(root) / name):
        if since is not None and path.stat().st_mtime < since:
            continue  # nothing in it is newer than its last write
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue  # a torn last line from a crash mid-write
                if not isinstance(record, dict) or not well_formed(record):
                    continue
                if since is not None and (record.get("ts") or 0) < since:
                    continue
                yield record


_NUMBER_FIELDS = ("ts", "tookMs", "dwellMs")
_TEXT_FIELDS = ("type", "requestId")
_OPTIONAL_TEXT_FIELDS = ("version", "role")


def well_formed(record: dict[str, Any]) -> bool:
    """The fields readers compute with have the types the service writes: a hand-edited or foreign line
    that does not is skipped like a torn one, never a traceback or a NaN in a summary."""
    def number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    if not isinstance(record.get("type"), str):
        return False
    if any(record.get(f) is not None and not number(record[f]) for f in _NUMBER_FIELDS):
        return False
    if any(f in record and not isinstance(record[f], str) for f in _TEXT_FIELDS):
        return False
    if any(record.get(f) is not None and not isinstance(record[f], str) for f in _OPTIONAL_TEXT_FIELDS):
        return False
    position = record.get("position")
    if position is not None and (isinstance(position, bool) or not isinstance(position, int) or position < 1):
        return False
    if record.get("ids") is not None and not isinstance(record["ids"], list):
        return False
    # an impression is counted per request and per version: both must be there
    return record["type"] != "impression" or ("requestId" in record and isinstance(record.get("version"), str))
