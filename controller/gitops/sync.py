"""Git sync: apply exactly the manifests of a branch's head commit, and record which commit.

One pass (sync_once):
  fetch the branch into the store's mirror -> export that commit -> load and
  validate every manifest under --path (all or nothing: one invalid manifest
  and nothing is applied, the previous commit stays applied) -> reconcile each
  index with journal_extra {commit, repo, branch} so every alias or weight
  change in the history journal names its commit -> record the applied commit
  per index (indexes/<name>/sync.json) and per source (gitops/<key>/state.json).

An index whose manifest disappears from the branch keeps serving unless
prune=True; only indexes this source applied before can be pruned.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from controller.engine.reconcile import Hooks, remove_index
from controller.engine.rollout import next_due
from controller.durations import parse_duration
from controller.engine.validate import validate_all
from controller.errors import ControllerError, InvalidInput
from controller.gitops.git import Mirror, normalize_repo, strip_export, subdir
from controller.engine.notify import Notifier, make_notifier
from controller.gitops.runner import Outcome, reconcile_all
from controller.store.syncstate import index_sync, utc_now, write_index_sync, write_source_state
from controller.progress import Progress, silent
from controller.manifest.load import LoadedManifest, files_in, load_manifests
from controller.store.fs import Store


@dataclass(frozen=True)
class SyncSource:
    repo: str
    branch: str
    path: str = "."

    @property
    def directory(self) -> str:
        """--path as one spelling: `./indexes`, `indexes/` and `indexes` are the same source."""
        return posixpath.normpath(self.path.strip("/") or ".")

    @property
    def key(self) -> str:
        """One state record per (repository, branch, directory)."""
        raw = f"{normalize_repo(self.repo)}#{self.branch}#{self.directory}"
        return hashlib.sha256(raw.encode()).hexdigest()[:12]


@dataclass
class SyncReport:
    commit: str | None
    outcomes: list[Outcome] = field(default_factory=list)
    error: str | None = None  # the commit could not be applied at all (fetch, invalid manifests)
    error_exit: int = 0
    pruned: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and all(o.error is None for o in self.outcomes)

    @property
    def unhealthy(self) -> list[str]:
        """As reconcile: a candidate rolled back, an index left Stalled (blocked) or Degraded."""
        from controller.api import unhealthy

        return unhealthy(o.result for o in self.outcomes if o.result is not None)

    @property
    def exit_code(self) -> int:
        if self.error:
            return self.error_exit or 1
        if not self.ok:
            return 1
        return 3 if self.unhealthy else 0  # 3 = EXIT_DEGRADED: applied, but not healthy

    def lines(self) -> list[str]:
        if self.error:
            return [f"error: {self.error}"]
        out = [f"commit {self.commit[:12] if self.commit else '-'}:"] + ["  " + o.line() for o in self.outcomes]
        out += [f"  index {n}: pruned (its manifest was deleted)" for n in self.pruned]
        out += [f"  index {n}: its manifest was deleted; still serving (use --prune to delete it)"
                for n in self.orphaned]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"commit": self.commit, "error": self.error, "pruned": self.pruned, "orphaned": self.orphaned,
                "indexes": [o.to_dict() for o in self.outcomes]}


def sync_once(source: SyncSource, store: Store, *, prune: bool = False, data_roots: Iterable[str | Path] = (),
              webhook: str | None = None, notifier: Notifier | None = None,
              allow_private_webhooks: bool | None = None,
              progress: Callable[[str], Progress] = lambda label: silent) -> SyncReport:
    """One pass. A long-running caller passes its own `notifier` so webhook retries outlive
    the pass; without one, pending notifications are flushed (for a bounded time) before returning."""
    own = notifier is None
    # first: a refused --webhook is an error before anything is fetched or written
    notifier = notifier or make_notifier(store.root, webhook, allow_private=allow_private_webhooks)
    try:
        return _sync_once(source, store, prune, data_roots, notifier, progress)
    finally:
        if own:
            notifier.close()


def _sync_once(source: SyncSource, store: Store, prune: bool, data_roots: Iterable[str | Path],
               notifier: Notifier, progress: Callable[[str], Progress]) -> SyncReport:
    mirror = Mirror.for_store(store.root, source.repo)
    key = source.key
    common = {"repo": mirror.repo, "branch": source.branch, "path": source.directory}
    try:
        mirror.fetch()
        head = mirror.resolve(source.branch)
    except ControllerError as exc:
        write_source_state(store, key, **common, error=str(exc), errorAt=utc_now())
        return SyncReport(None, error=str(exc), error_exit=exc.exit_code)
    write_source_state(store, key, **common, head=head, fetchedAt=utc_now())
    export = mirror.root / "exports" / head
    try:
        directory = subdir(mirror.export(head), source.path, head)
        loaded = _load(directory, data_roots)
    except ControllerError as exc:
        # all or nothing: the previously applied commit stays applied
        message = f"commit {head[:12]} not applied: {strip_export(str(exc), export)}"
        write_source_state(store, key, error=message, errorAt=utc_now())
        return SyncReport(head, error=message, error_exit=exc.exit_code)
    extra = {"commit": head, "repo": mirror.repo, "branch": source.branch}
    notifier.retarget(loaded, extra)
    hooks = Hooks(progress=progress, journal_extra=extra, on_transition=notifier)
    outcomes = reconcile_all(loaded, store, hooks)
    for o in outcomes:
        if o.error:
            o.error = strip_export(o.error, export)
    report = SyncReport(head, outcomes)
    for o in outcomes:
        if o.ok:
            digest = next(m.digest for m in loaded if m.name == o.name)
            write_index_sync(store, o.name, {**common, "source": key, "commit": head, "manifestDigest": digest,
                                             "appliedAt": _applied_at(store, o.name, head)})
    _handle_deleted(store, key, {m.name for m in loaded}, head, prune, report)
    errors = {o.name: o.error for o in outcomes if o.error}
    write_source_state(store, key, applied=head if report.ok else None, error=None, indexErrors=errors)
    mirror.prune_exports(keep={head})
    return report


def _load(directory: Path, data_roots: Iterable[str | Path]) -> list[LoadedManifest]:
    """Every manifest under `directory`; a directory with no manifest at all is an empty set,
    so deleting the last manifest is a change like any other (prunable with --prune)."""
    if no_manifests(directory):
        return []
    loaded = load_manifests(directory, data_roots)
    validate_all(loaded)  # a commit is applied whole or not at all
    return loaded


def no_manifests(directory: Path) -> bool:
    """A directory without any file load_manifests would read (so a kustomization.yaml alone is none)."""
    return directory.is_dir() and not files_in(directory)


def _applied_at(store: Store, name: str, head: str) -> str:
    """Keep the first time a commit was applied, so re-syncing the same commit writes nothing."""
    previous = index_sync(store, name) or {}
    return previous["appliedAt"] if previous.get("commit") == head and "appliedAt" in previous else utc_now()


def _handle_deleted(store: Store, key: str, present: set[str], head: str, prune: bool, report: SyncReport) -> None:
    for name in store.indexes():
        record = index_sync(store, name)
        if name in present or record is None or record.get("source") != key:
            continue  # never touch an index another source (or a human) manages
        if prune:
            remove_index(store, name)
            report.pruned.append(name)
        else:
            if record.get("orphaned") is None:
                write_index_sync(store, name, {**record, "orphaned": head})
            report.orphaned.append(name)


def parse_interval(text: str, flag: str = "--interval") -> float:
    """'60s', '5m', '1h' or a plain number of seconds (one parser for every CLI flag)."""
    return parse_duration(text, flag)


def sync_loop(source: SyncSource, store: Store, interval: float, stop: threading.Event,
              on_report: Callable[[SyncReport], None], **kwargs: Any) -> None:
    """Sync every `interval` seconds until `stop` is set; errors are reported and retried."""
    notifier = make_notifier(store.root, kwargs.pop("webhook", None),
                             allow_private=kwargs.pop("allow_private_webhooks", None))
    try:
        while not stop.is_set():
            on_report(sync_once(source, store, notifier=notifier, **kwargs))
            due = next_due(store)  # a rollout step due before the next interval is applied on time
            stop.wait(interval if due is None else min(interval, max(due - time.time(), 1.0)))
    finally:
        notifier.close()
