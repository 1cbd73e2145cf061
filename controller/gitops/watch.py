"""Watch a manifest directory and reconcile after each burst of changes.

Editors save in many ways: write in place (modified, closed), write a temp
file and rename it over the manifest (watchdog reports a FileMovedEvent whose
dest_path is the manifest; the src_path is the temp name), or delete and
recreate. We do not track which file changed: any relevant event marks the
directory dirty, and after `debounce` seconds without events the whole
directory is loaded again, so every pattern converges to "read what is on
disk now". A save that leaves an invalid manifest (half-written, mid-edit)
is reported as one line and nothing is applied: the store keeps the last good
state, and the next change retries.

Events that cannot change a manifest are ignored so the loop never feeds
itself: opened/closed-without-write (our own reads), anything under the store
and anything hidden (.git, .controller, editor swap files like .x.swp).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from controller.engine.reconcile import Hooks
from controller.engine.rollout import next_due
from controller.engine.validate import validate_all
from controller.errors import ControllerError
from controller.engine.notify import Notifier, make_notifier
from controller.gitops.runner import Outcome, reconcile_all
from controller.progress import Progress, silent
from controller.manifest.load import load_manifests
from controller.store.fs import Store

IGNORED_EVENTS = {"opened", "closed_no_write"}
POLL_S = 0.2  # how often the loop looks at the stop event while idle


@dataclass
class WatchPass:
    """One reconcile pass: either an error that kept the last state, or per-index outcomes."""

    error: str | None = None
    outcomes: list[Outcome] = field(default_factory=list)

    def lines(self) -> list[str]:
        if self.error:
            return [f"error: {self.error} (nothing applied; the last good state is kept; "
                    "retrying on the next change)"]
        return [o.line() for o in self.outcomes]


class _DirtyFlag(FileSystemEventHandler):
    def __init__(self, root: Path, ignore: Iterable[Path], dirty: threading.Event) -> None:
        self.root = root.resolve()
        self.ignore = [p.resolve() for p in ignore]
        self.dirty = dirty

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in IGNORED_EVENTS:
            return
        if event.is_directory and event.event_type == "modified":
            return  # a directory's mtime moves with every file event we already see
        paths = [os.fsdecode(p) for p in (event.src_path, event.dest_path) if p]
        if any(self.relevant(Path(p)) for p in paths):
            self.dirty.set()

    def relevant(self, path: Path) -> bool:
        path = path.resolve() if path.exists() else path.absolute()
        if any(path.is_relative_to(i) for i in self.ignore):
            return False
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return False
        return not any(p.startswith(".") or p.endswith("~") for p in parts)


def run_pass(directory: Path, store: Store, hooks: Hooks, notifier: Notifier,
             data_roots: Iterable[str | Path]) -> WatchPass:
    try:
        loaded = load_manifests(directory, data_roots)
        validate_all(loaded, store)  # all valid or nothing applied (inputs the store vouches for skip)
    except ControllerError as exc:
        return WatchPass(error=str(exc))
    notifier.retarget(loaded, hooks.journal_extra)
    return WatchPass(outcomes=reconcile_all(loaded, store, hooks))


def watch_directory(directory: Path, store: Store, stop: threading.Event, *, debounce: float = 1.0,
                    data_roots: Iterable[str | Path] = (), webhook: str | None = None,
                    allow_private_webhooks: bool | None = None,
                    on_pass: Callable[[WatchPass], None] = lambda p: None,
                    progress: Callable[[str], Progress] = lambda label: silent,
                    ready: threading.Event | None = None) -> None:
    """Reconcile `directory` now and after every burst of changes, until `stop` is set."""
    directory = Path(directory)
    dirty = threading.Event()
    handler = _DirtyFlag(directory, [store.root], dirty)
    notifier = make_notifier(store.root, webhook, allow_private=allow_private_webhooks)
    hooks = Hooks(progress=progress, journal_extra={}, on_transition=notifier)
    observer = Observer()
    observer.schedule(handler, str(directory), recursive=True)
    observer.start()  # before the first pass, so a save during it is not lost
    try:
        if ready is not None:
            ready.set()
        on_pass(run_pass(directory, store, hooks, notifier, data_roots))
        due = next_due(store)  # a rollout step (pause end, analysis look) due without any file change
        while not stop.is_set():
            if not dirty.wait(POLL_S):
                if due is not None and time.time() >= due:
                    on_pass(run_pass(directory, store, hooks, notifier, data_roots))
                    due = next_due(store)
                continue
            if not _quiet_for(debounce, dirty, stop):
                return
            on_pass(run_pass(directory, store, hooks, notifier, data_roots))
            due = next_due(store)
    finally:
        observer.stop()
        observer.join(timeout=5)
        notifier.close(timeout=5.0)


def _quiet_for(debounce: float, dirty: threading.Event, stop: threading.Event) -> bool:
    """Wait until no event arrived for `debounce` seconds; False when stopped meanwhile."""
    while True:
        dirty.clear()
        if stop.wait(debounce):
            return False
        if not dirty.is_set():
            return True
