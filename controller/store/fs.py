"""The versioned store on the local file system (the embedded default).

Layout, per index:

    <root>/indexes/<name>/
        versions/<version>/   ids.json, hashes.json, meta.json (immutable), verdict.json
                              (check results), queries/ (copied golden query files), and the
                              files of the embedded vector backend (docs/backends.md)
        routing.json          alias -> stable, candidate, weight, held (+ mirror, interleave shares)
        rollout.json          step state of a stepped rollout (spec.rollout.steps)
        status.json           the last computed status (written when it changes)
        history.jsonl         append-only journal of alias and weight changes (each record has an id)
        transition.json       only between the commit and the end of a state transition (see
                              store/transition.py); recovery completes it after a crash
        inputs.json           stat signatures of the input files and the corpus facts learned under them
                              (store/signature.py): a no-op reconcile reads no input
        calibration.json      drift thresholds from `controller calibrate` (used by max: auto)
        queries/<fp>.npz      reservoir of served query vectors per model fingerprint

Why plain files and not SQLite: every record is small, read whole and written
whole, so temp-file + fsync + rename gives atomic replacement with no server
or schema; files stay readable with `cat` and `jq`; the embedded vector
index is files anyway. One writer at a time is enforced with an flock on <root>/.lock;
a second writer waits for it (bounded by the lock timeout). A version is staged
in a hidden directory and renamed into place only when complete, so an alias
can never point at a half-built version. Verdict, routing and journal change
together through one transition record (store/transition.py). Only versions
whose checks passed are routable (or ones a `rollback --to --force` recorded).
Files are created 0600 and directories 0700 (CONTROLLER_UMASK widens them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from controller.errors import NotFound, StoreError
from controller.paths import STORE_ENV  # noqa: F401  (re-exported: one definition)
from controller.inputs import valid_name, validate_name, validate_version
from controller.store import atomic
from controller.store import transition

if TYPE_CHECKING:  # the core types load on first use, so `controller status` starts fast
    from controller.core.types import Routing, VersionInfo

DEFAULT_LOCK_TIMEOUT = 300.0  # seconds a writer waits for another one; 0 fails at once
_LOCK_POLL = 0.05


def print_lock_wait(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Store:
    def __init__(self, root: str | Path, lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the store {self.root} is not a directory (--store / $CONTROLLER_STORE)")
        self.lock_timeout = lock_timeout
        self.recovered: list[str] = []  # what the last recovery did (for logs and tests)
        self._holder: int | None = None  # thread holding this object's lock: re-entry must not self-deadlock

    # ---- layout -------------------------------------------------------------
    def index_dir(self, name: str) -> Path:
        # defense in depth: every shell validates names, but no path is ever built from a bad one
        return self.root / "indexes" / validate_name(name)

    def version_dir(self, name: str, version: str) -> Path:
        return self.index_dir(name) / "versions" / validate_version(version)

    def indexes(self) -> list[str]:
        base = self.root / "indexes"
        # hidden or foreign directories (staging, trash) are not indexes
        return sorted(p.name for p in base.iterdir() if p.is_dir() and valid_name(p.name)) if base.is_dir() else []

    def require_index(self, name: str) -> None:
        if not self.index_dir(name).is_dir():
            known = ", ".join(self.indexes()) or "none"
            raise NotFound(f"no index named {name!r} in the store {self.root} (known: {known})")

    @contextlib.contextmanager
    def lock(self, timeout: float | None = None,
             on_wait: Callable[[str], None] | None = print_lock_wait) -> Iterator[None]:
        """Exclusive writer lock. A second writer waits up to `timeout` seconds (default: the
        store's lock_timeout; 0 fails at once), saying once, through on_wait, who it waits for.

        Holding the lock, the writer first recovers the store from any crashed writer.
        """
        if self._holder == threading.get_ident():
            yield  # already held by this thread through this Store: flock would block on itself
            return
        timeout = self.lock_timeout if timeout is None else timeout
        existed = self.root.exists()
        atomic.make_dirs(self.root)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, atomic.file_mode())
        mine = False
        try:
            self._acquire(fd, timeout, on_wait)
            mine = True
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
            self.recovered = transition.recover_root(self.root / "indexes")
            self._holder = threading.get_ident()
            yield
        finally:
            if mine:
                self._holder = None
            os.close(fd)
            if not existed and os.listdir(self.root) == [".lock"]:
                # nothing was written (e.g. bad input found mid-build): leave no trace
                atomic.remove_file(self.root / ".lock")
                atomic.before_write("rmdir", self.root)
                self.root.rmdir()

    def _acquire(self, fd: int, timeout: float, on_wait: Callable[[str], None] | None) -> None:
        deadline = time.monotonic() + max(timeout, 0.0)
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            holder = self._lock_holder(fd)
            if timeout <= 0:
                raise StoreError(f"the store {self.root} is locked by {holder}; not waiting (--lock-timeout 0)")
            if time.monotonic() >= deadline:
                raise StoreError(f"the store {self.root} is still locked by {holder} after waiting "
                                 f"{timeout:g}s (--lock-timeout); try again when it has finished")
            if not waited and on_wait is not None:
                on_wait(f"waiting up to {timeout:g}s for the store lock {self.root / '.lock'}, held by {holder}")
            waited = True
            time.sleep(_LOCK_POLL)

    @staticmethod
    def _lock_holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (ValueError, KeyError, TypeError):
            return "another controller process"

    # ---- versions -----------------------------------------------------------
    def versions(self, name: str) -> list[VersionInfo]:
        base = self.index_dir(name) / "versions"
        if not base.is_dir():
            return []
        out = []
        for d in sorted(base.iterdir()):
            if d.name.startswith(".") or not (d / "meta.json").is_file():
                continue  # staging leftovers from a crash are not versions
            out.append(self._version_info(name, d.name))
        return sorted(out, key=lambda v: v.created)

    def _version_info(self, name: str, version: str) -> VersionInfo:
        meta = self.meta(name, version)
        from controller.core.types import VersionInfo

        verdict = atomic.read_json(self.version_dir(name, version) / "verdict.json") or {}
        return VersionInfo(
            id=version, label=meta["label"], fingerprint=meta["fingerprint"],
            factory=meta["index"]["factory"], metric=meta["index"]["metric"],
            corpus_digest=meta["corpus"]["digest"], created=meta["created"],
            documents=meta["corpus"]["documents"], verdict=verdict.get("verdict"),
            verdict_message=verdict.get("message", ""),
            stale=bool(((meta.get("corpusDrift") or {}).get("assessment") or {}).get("stale", False)),
        )

    def meta(self, name: str, version: str) -> dict[str, Any]:
        path = self.version_dir(name, version) / "meta.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NotFound(f"index {name!r} has no version {version!r}") from exc
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError; bytes edited from outside
            raise StoreError(f"corrupt version metadata {path}: {exc}") from exc

    def verdict(self, name: str, version: str) -> dict[str, Any] | None:
        return atomic.read_json(self.version_dir(name, version) / "verdict.json")

    def write_verdict(self, name: str, version: str, verdict: dict[str, Any]) -> None:
        self.commit_transition(name, verdicts={version: verdict})

    def ids(self, name: str, version: str) -> list[str]:
        """Document ids of a version: row i of its vectors is document ids[i], on every backend."""
        return self._version_list(name, version, "ids.json")

    def hashes(self, name: str, version: str) -> list[str]:
        """Content hashes of a version's documents, row for row with ids()."""
        return self._version_list(name, version, "hashes.json")

    def _version_list(self, name: str, version: str, filename: str) -> list[str]:
        """A JSON list file of a complete version; a damaged or missing one is a StoreError naming it.

        These files are written only inside the staged version, so damage means an edit or a truncation
        from outside: say which file, like atomic.read_json does for the store's object files.
        """
        folder = self.version_dir(name, version)
        path = folder / filename
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if not (folder / "meta.json").is_file():
                raise NotFound(f"index {name!r} has no version {version!r}") from None
            raise StoreError(f"{path}: missing from a complete version; restore it from a backup") from None
        except NotADirectoryError:
            raise StoreError(f"{path}: a parent is not a directory") from None
        except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
            raise StoreError(f"{path}: not valid JSON ({e}); restore it from a backup") from None
        if not isinstance(data, list):
            raise StoreError(f"{path}: expected a JSON list, found {type(data).__name__}; "
                             "restore it from a backup")
        return data

    def write_version(self, name: str, version: str, *, fill: Callable[[Path], None],
                      ids: list[str], hashes: list[str], meta: dict[str, Any],
                      extra_files: dict[str, Path] | None = None) -> Path:
        """Stage every file in a hidden directory, fsync, then rename it into place.

        ``fill(staging)`` writes the vectors through the version's backend (files in the staging
        directory for the embedded one); the version exists for the store only after the rename.
        """
        final = self.version_dir(name, version)
        if final.exists():
            raise StoreError(f"version {version!r} of {name!r} already exists; versions are immutable")
        from concurrent.futures import ThreadPoolExecutor  # here: read-only verbs never write a version

        staging = final.parent / f".staging-{version}-{os.getpid()}"
        atomic.remove_tree(staging)
        atomic.make_dirs(staging)
        try:
            # ids.json and hashes.json (one line per document) are encoded on a second thread while the
            # backend fills the staging directory, mostly in C without the GIL (a vector library writing its index);
            # they are written here afterwards, in the same order as ever
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode-ids") as pool:
                encoded = pool.submit(lambda: (atomic.encode_json(ids), atomic.encode_json(hashes)))
                fill(staging)
                ids_json, hashes_json = encoded.result()
            atomic.write_bytes(staging / "ids.json", ids_json, staged=True)
            atomic.write_bytes(staging / "hashes.json", hashes_json, staged=True)
            for rel, src in (extra_files or {}).items():
                atomic.copy_file(src, staging / rel)
            for folder in {(staging / rel).parent for rel in extra_files or {}} - {staging}:
                atomic.fsync_dir(folder)  # entries of subdirectories (queries/): the staging fsync covers only its own
            atomic.write_json(staging / "meta.json", meta, staged=True)
            atomic.fsync_dir(staging)  # every entry above: durable before the rename
            atomic.rename(staging, final)
            atomic.fsync_dir(final.parent)
        except BaseException:
            atomic.remove_tree(staging)  # a crash instead leaves it to the next writer's recovery
            raise
        return final

    def delete_version(self, name: str, version: str) -> None:
        """Rename away first so a crash mid-delete never leaves a half version visible."""
        d = self.version_dir(name, version)
        trash = d.parent / f".deleting-{version}-{os.getpid()}"
        atomic.rename(d, trash)
        atomic.fsync_dir(d.parent)
        atomic.remove_tree(trash)

    def delete_index(self, name: str) -> None:
        """Rename away, then delete: a crash leaves `.deleting-*`, which recovery removes."""
        d = self.index_dir(name)
        if not d.exists():
            return
        trash = d.parent / f".deleting-{name}-{os.getpid()}"
        atomic.rename(d, trash)
        atomic.fsync_dir(d.parent)
        atomic.remove_tree(trash)

    # ---- routing, status, journal --------------------------------------------
    def routing(self, name: str) -> Routing:
        data = atomic.read_json(self.index_dir(name) / "routing.json") or {}
        from controller.core.types import Routing

        return Routing(stable=data.get("stable"), candidate=data.get("candidate"),
                       weight=float(data.get("weight", 0.0)), held=tuple(data.get("held", [])),
                       mirror=float(data.get("mirror", 0.0)), interleave=float(data.get("interleave", 0.0)))

    def routing_record(self, name: str) -> dict[str, Any]:
        return atomic.read_json(self.index_dir(name) / "routing.json") or {}

    def write_routing(self, name: str, alias: str, routing: Routing) -> None:
        self.commit_transition(name, routing=(alias, routing))

    def commit_transition(self, name: str, *, verdicts: dict[str, dict[str, Any]] | None = None,
                          routing: tuple[str, Routing] | None = None, journal: dict[str, Any] | None = None,
                          forced: dict[str, dict[str, Any]] | None = None,
                          status: dict[str, Any] | None = None, rollout: dict[str, Any] | None = None) -> None:
        """Verdicts, routing, one journal record (and a status) as one atomic transition.

        The routing is checked first (counting the verdicts of this transition):
        a refused transition writes nothing. `forced` names versions a manual
        `rollback --force` may route although they have no passing verdict. `rollout` is the
        step state of a stepped rollout (rollout.json), committed with the routing it implies.
        """
        if journal is not None and not journal.get("id"):
            journal = {**journal, "id": uuid.uuid4().hex}  # the id makes a replayed append idempotent
        record: dict[str, Any] = {"id": journal["id"] if journal else uuid.uuid4().hex,
                                  "verdicts": verdicts or {}, "journal": journal, "status": status,
                                  "routing": None}
        if rollout is not None:
            record["rollout"] = rollout
        if routing is not None:
            alias, target = routing
            allowed = self._check_routable(name, target, verdicts or {}, forced or {})
            record["routing"] = {"alias": alias, "stable": target.stable, "candidate": target.candidate,
                                 "weight": target.weight, "held": list(target.held)}
            for share in ("mirror", "interleave"):  # absent when 0: records stay as they were without steps
                if getattr(target, share):
                    record["routing"][share] = getattr(target, share)
            if allowed:
                record["routing"]["forced"] = allowed
        transition.commit(self.index_dir(name), record)

    def _check_routable(self, name: str, routing: Routing, pending: dict[str, dict[str, Any]],
                        forced: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """The store routes only to complete versions whose checks passed, whoever asks.

        Returns the forced versions still routed: a forced version stays routable
        (and shown in status) while the alias or the candidate points at it.
        """
        carried = {**(self.routing_record(name).get("forced") or {}), **forced}
        still: dict[str, dict[str, Any]] = {}
        for version in (routing.stable, routing.candidate):
            if version is None:
                continue
            if not (self.version_dir(name, version) / "meta.json").is_file():
                raise StoreError(f"refusing to route {name!r} to {version!r}: no complete version")
            if version in carried:
                still[version] = carried[version]
                continue
            refusal = unroutable_reason(pending.get(version) or self.verdict(name, version))
            if refusal:
                raise StoreError(f"refusing to route {name!r} to {version!r}: {refusal}")
        return still

    def rollout(self, name: str) -> dict[str, Any] | None:
        """The step state of the index's current or last stepped rollout (core.steps.RolloutState)."""
        return atomic.read_json(self.index_dir(name) / "rollout.json")

    def status(self, name: str) -> dict[str, Any] | None:
        return atomic.read_json(self.index_dir(name) / "status.json")

    def write_status(self, name: str, status: dict[str, Any]) -> bool:
        """Write only when something changed; returns whether it wrote."""
        if self.status(name) == json.loads(json.dumps(status)):
            return False
        atomic.write_json(self.index_dir(name) / "status.json", status)
        return True

    def calibration(self, name: str) -> dict[str, Any] | None:
        """Stored drift calibration (`controller calibrate`): thresholds per statistic for one version."""
        return atomic.read_json(self.index_dir(name) / "calibration.json")

    def write_calibration(self, name: str, calibration: dict[str, Any]) -> None:
        with self.lock():  # `controller calibrate` writes outside any reconcile
            atomic.write_json(self.index_dir(name) / "calibration.json", calibration)

    def journal(self, name: str) -> list[dict[str, Any]]:
        return atomic.read_lines(self.index_dir(name) / "history.jsonl")

    def journal_newest_first(self, name: str) -> Iterator[dict[str, Any]]:
        """The journal from its last record back, read lazily from the end of the file."""
        return atomic.read_lines_newest_first(self.index_dir(name) / "history.jsonl")

    def torn_journal_lines(self, name: str) -> list[int]:
        """Line numbers of history.jsonl that a crash mid-append left unreadable (they are skipped)."""
        return atomic.read_lines_checked(self.index_dir(name) / "history.jsonl")[1]

    def append_journal(self, name: str, record: dict[str, Any]) -> None:
        self.commit_transition(name, journal=record)


def unroutable_reason(verdict: dict[str, Any] | None) -> str | None:
    """Why a version with this recorded verdict must not serve, or None when it may."""
    if verdict is None or verdict.get("verdict") is None:
        return ("it has no recorded verdict: its checks never completed (a crash or an error during "
                "the checks); reconcile again to check it")
    if verdict.get("verdict") == "failed":
        return f"it failed its gates ({verdict.get('message', '')})"
    if verdict.get("verdict") != "passed":
        return f"its verdict is {verdict.get('verdict')!r}, not 'passed'"
    return None
