"""The public Python API: what the CLI verbs call, and what users import.

    from controller import open_store, load_manifests, plan, reconcile, status, get, rollback, wait

Every function takes a Store or a store path (None: the same default as the
CLI, see controller.paths). Results are the engine's own types
(``IndexResult``) or plain dicts with camelCase keys, as the CLI prints them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, Union

from controller.errors import ControllerError, InvalidInput, NotFound
from controller.paths import store_path
from controller.stamps import parse_stamp
from controller.store.fs import Store

if TYPE_CHECKING:  # the engine (numpy, vector backends, pydantic) loads when a function needs it
    from controller.engine.reconcile import Hooks, IndexResult
    from controller.manifest.load import LoadedManifest

StoreLike = Union[Store, str, Path, None]
Manifests = Union[str, Path, Sequence["LoadedManifest"]]

#: Phases that mean "an index needs a human": reconcile exits 3 when it leaves one behind.
UNHEALTHY_PHASES: frozenset[str] = frozenset({"RolledBack", "Stalled", "Degraded", "Failed"})


def open_store(store: StoreLike = None) -> Store:
    """A Store from a Store, a path, or None (--store / $CONTROLLER_STORE / the per-user default)."""
    if isinstance(store, Store):
        return store
    return Store(store_path(store))


def load_manifests(path: str | Path, data_roots: Iterable[str | Path] = ()) -> list[LoadedManifest]:
    """Load and validate every EmbeddingIndex manifest in a file, multi-document file or directory."""
    from controller.manifest.load import load_manifests as _load

    return _load(path, data_roots)


def _manifests(manifests: Manifests, data_roots: Iterable[str | Path]) -> list[LoadedManifest]:
    if isinstance(manifests, (str, Path)):
        return load_manifests(manifests, data_roots)
    return list(manifests)


def plan(manifests: Manifests, store: StoreLike = None, *,
         data_roots: Iterable[str | Path] = ()) -> list[IndexResult]:
    """Observe and plan, change nothing (`reconcile --dry-run`): each result's ``plan`` holds the actions."""
    from controller.engine.reconcile import reconcile_index
    from controller.engine.validate import validate_all

    st = open_store(store)
    loaded = _manifests(manifests, data_roots)
    validate_all(loaded, st)  # a dry run refuses what a real run would
    return [reconcile_index(m, st, dry_run=True) for m in loaded]


def reconcile(manifests: Manifests, store: StoreLike = None, *, data_roots: Iterable[str | Path] = (),
              hooks: Hooks | None = None, lock_timeout: float | None = None) -> list[IndexResult]:
    """Make the store match the manifests: build, check, weight, switch or roll back.

    `lock_timeout`: seconds to wait for another writer (None: the store's default, 5 min; 0: fail at once)."""
    from controller.engine.reconcile import Hooks, reconcile_index
    from controller.engine.validate import validate_all

    st = open_store(store)
    loaded = _manifests(manifests, data_roots)
    # every manifest and its data validated before the first write: all or nothing (a first version's
    # index may be built in memory meanwhile, and is written only once everything has passed)
    validate_all(loaded, st, build_ahead=True)
    return [reconcile_index(m, st, dry_run=False, hooks=hooks or Hooks(), lock_timeout=lock_timeout)
            for m in loaded]


def unhealthy(results: Iterable[IndexResult]) -> list[str]:
    """Why a reconcile must not count as a success: one sentence per index that failed a gate in this
    run, was rolled back, or is left Stalled/Degraded (empty when all is well)."""
    out = []
    for r in results:
        failed = [rep.version for rep in r.reports if not rep.passed]
        phase = (r.status or {}).get("phase")
        if failed:
            out.append(f"{r.name}: {', '.join(failed)} failed its gates and was rolled back")
        elif r.plan.blocked:
            out.append(f"{r.name}: blocked ({r.plan.blocked}): {r.plan.message}")
        elif phase in UNHEALTHY_PHASES:
            out.append(f"{r.name}: phase {phase}: {(r.status or {}).get('message', '')}".rstrip(": "))
    return out


#: Phase of a listed index whose status cannot be read; its row carries an ``error`` field saying why.
UNKNOWN_PHASE = "Unknown"


def status(name: str | None = None, store: StoreLike = None) -> dict[str, Any] | list[dict[str, Any]]:
    """The stored status of one index (a dict), or of every index (a list, sorted by name).

    Listing, an index whose status cannot be read is a row with phase Unknown and an ``error``
    (see unreadable()) instead of an exception: one broken index must not hide the healthy ones.
    """
    st = open_store(store)
    if name is not None:
        return _status_of(st, name)
    return [_listed(st, n, _status_of, _unknown_status) for n in st.indexes()]


def unreadable(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of a status() or get() listing that could not be read (they have an ``error``)."""
    return [r for r in rows if r.get("error")]


def _listed(st: Store, name: str, read: Callable[[Store, str], dict[str, Any]],
            unknown: Callable[[str, str], dict[str, Any]]) -> dict[str, Any]:
    """read(st, name), or the Unknown row saying why it failed (a missing or damaged store file)."""
    try:
        return read(st, name)
    except ControllerError as exc:
        return unknown(name, str(exc))
    except OSError as exc:  # e.g. a status.json the caller may not read: name the file, as the CLI does
        return unknown(name, f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))


def _unknown_status(name: str, error: str) -> dict[str, Any]:
    return {"name": name, "phase": UNKNOWN_PHASE, "error": error}


def _unknown_row(name: str, error: str) -> dict[str, Any]:
    return {"name": name, "phase": UNKNOWN_PHASE, "stable": None, "candidate": None, "weight": 0,
            "step": None, "created": None, "age": "-", "error": error}


def _status_of(st: Store, name: str) -> dict[str, Any]:
    st.require_index(name)
    s = st.status(name)
    if s is None:
        # an index directory without status: a first reconcile stopped (Ctrl-C) before its first status write
        raise NotFound(f"index {name!r} has never been reconciled in {st.root} (no "
                       f"{st.index_dir(name) / 'status.json'}, as an interrupted first reconcile leaves it)")
    return s


def get(name: str | None = None, store: StoreLike = None, *, now: datetime | None = None
        ) -> dict[str, Any] | list[dict[str, Any]]:
    """One summary row per index (name, phase, stable, candidate, weight, step, age), like `kubectl get`.

    Listing, an index whose status cannot be read is a row with phase Unknown and an ``error``."""
    st = open_store(store)
    clock = now or datetime.now(timezone.utc)
    if name is not None:
        return _row(st, name, clock)
    # one broken index is a row with phase Unknown and an error, as in status()
    return [_listed(st, n, partial(_row, now=clock), _unknown_row) for n in st.indexes()]


def _row(st: Store, name: str, now: datetime) -> dict[str, Any]:
    s = _status_of(st, name)
    journal = st.journal(name)
    created = journal[0]["time"] if journal else None
    return {
        "name": name,
        "phase": s.get("phase"),
        "stable": (s.get("stable") or {}).get("version"),
        "candidate": (s.get("candidate") or {}).get("version"),
        "weight": s.get("weight", 0),
        "step": _step_column(s.get("rollout")),  # "2/7" during stepped rollouts, else None ("-")
        "created": created,
        "age": age(created, now),
    }


def age(stamp: str | None, now: datetime) -> str:
    """kubectl-style age: 45s, 12m, 5h, 3d."""
    if not stamp:
        return "-"
    try:
        then = parse_stamp(stamp)
    except ValueError:
        return "-"
    seconds = max(int((now - then).total_seconds()), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def rollback(name: str, to: str | None = None, store: StoreLike = None, *, force: bool = False,
             lock_timeout: float | None = None) -> dict[str, Any]:
    """Withdraw the candidate, or move the alias to the previous (or named) version that passed its
    checks; `force` (with `to`) routes an unchecked or failed version, journaled. Returns the record."""
    from controller.engine.manual import rollback as _rollback

    return _rollback(open_store(store), name, to, force=force, lock_timeout=lock_timeout)


def _step_column(rollout: dict[str, Any] | None) -> str | None:
    if not rollout or rollout.get("promoted"):
        return None
    at = f"{rollout['currentStepIndex'] + 1}/{rollout['steps']}"
    return f"{at} aborted" if rollout.get("aborted") else at


def promote(name: str, store: StoreLike = None, *, full: bool = False, lock_timeout: float | None = None,
            notify: Any = None) -> dict[str, Any]:
    """Skip the current rollout step (a pause, an analysis) or, with `full`, every remaining step: the
    alias switches to the candidate. Returns the new status."""
    return _rollout_command(name, "promote-full" if full else "promote", store, lock_timeout, notify)


def abort(name: str, store: StoreLike = None, *, lock_timeout: float | None = None, notify: Any = None
          ) -> dict[str, Any]:
    """Abort the stepped rollout: weight, mirror and interleave back to 0 until `retry` or a manifest change."""
    return _rollout_command(name, "abort", store, lock_timeout, notify)


def retry(name: str, store: StoreLike = None, *, lock_timeout: float | None = None, notify: Any = None
          ) -> dict[str, Any]:
    """Start an aborted stepped rollout again from its first step."""
    return _rollout_command(name, "retry", store, lock_timeout, notify)


def _rollout_command(name: str, command: str, store: StoreLike, lock_timeout: float | None, notify: Any
                     ) -> dict[str, Any]:
    from controller.engine.rollout import apply_command

    kwargs = {"notify": notify} if notify is not None else {}
    return apply_command(open_store(store), name, command, lock_timeout=lock_timeout, **kwargs)


def history(name: str, store: StoreLike = None) -> dict[str, Any]:
    """The journal of alias and weight changes and the kept versions."""
    st = open_store(store)
    st.require_index(name)
    versions = [{"version": v.id, "label": v.label, "created": v.created, "verdict": v.verdict,
                 "documents": v.documents} for v in st.versions(name)]
    return {"name": name, "journal": st.journal(name), "versions": versions}


@dataclass(frozen=True)
class WaitFor:
    """What `wait` waits for: a condition's status, or a phase."""

    kind: str  # "condition" or "phase"
    name: str
    value: str  # condition status ("True"/"False"/"Unknown") or the phase

    def met(self, s: dict[str, Any]) -> bool:
        if self.kind == "phase":
            return str(s.get("phase", "")).lower() == self.value.lower()
        return any(c.get("type", "").lower() == self.name.lower() and c.get("status", "").lower()
                   == self.value.lower() for c in s.get("conditions", []))

    def observed(self, s: dict[str, Any] | None) -> str:
        if s is None:
            return "no status yet"
        if self.kind == "phase":
            return f"phase {s.get('phase')}"
        cond = next((c for c in s.get("conditions", []) if c.get("type", "").lower() == self.name.lower()),
                    None)
        if cond is None:
            return f"no {self.name} condition (phase {s.get('phase')})"
        return f"{cond['type']}={cond['status']} ({cond.get('reason', '')}: {cond.get('message', '')})"

    def __str__(self) -> str:
        return f"phase={self.value}" if self.kind == "phase" else f"condition={self.name}={self.value}"


def parse_wait_for(text: str) -> WaitFor:
    """`condition=Ready`, `condition=Ready=False` or `phase=Healthy` (as kubectl wait --for)."""
    from controller.core.status import CONDITION_TYPES
    from controller.core.types import Phase

    kind, _, rest = text.partition("=")
    if kind == "phase" and rest:
        _known(rest, [p.value for p in Phase], "phase", text)
        return WaitFor("phase", "phase", rest)
    if kind == "condition" and rest:
        cond, _, value = rest.partition("=")
        _known(cond, CONDITION_TYPES, "condition", text)
        value = value or "True"
        if value.lower() not in ("true", "false", "unknown"):
            raise InvalidInput(f"condition status must be True, False or Unknown, got {value!r}",
                               field="--for", value=text)
        return WaitFor("condition", cond, value.capitalize())
    raise InvalidInput("expected condition=NAME[=True|False|Unknown] or phase=PHASE, e.g. "
                       "--for=condition=Ready", field="--for", value=text)


def _known(name: str, known: Sequence[str], what: str, text: str) -> None:
    """A misspelt phase or condition would never hold: refuse it instead of waiting out the timeout."""
    if name.lower() not in (k.lower() for k in known):
        raise InvalidInput(f"unknown {what} {name!r}; one of {', '.join(known)}", field="--for", value=text)


@dataclass(frozen=True)
class WaitResult:
    met: bool
    waited: float
    status: dict[str, Any] | None
    message: str


def wait(name: str, wait_for: WaitFor | str, timeout: float, store: StoreLike = None, *,
         interval: float = 1.0, clock: Callable[[], float] = time.monotonic,
         sleep: Callable[[float], None] = time.sleep) -> WaitResult:
    """Poll the stored status of NAME until ``wait_for`` holds or ``timeout`` seconds pass."""
    st = open_store(store)
    want = parse_wait_for(wait_for) if isinstance(wait_for, str) else wait_for
    st.require_index(name)  # as kubectl wait: a name that is not there fails at once, not at the timeout
    started = clock()
    while True:
        current = st.status(name) if st.index_dir(name).is_dir() else None
        waited = clock() - started
        if current is not None and want.met(current):
            return WaitResult(True, waited, current, f"{name}: {want} met after {waited:.0f}s")
        if waited >= timeout:
            return WaitResult(False, waited, current,
                              f"timed out after {timeout:g}s waiting for {name} {want}: {want.observed(current)}")
        sleep(min(interval, max(timeout - waited, 0.0)))


__all__ = ["Store", "StoreLike", "UNHEALTHY_PHASES", "UNKNOWN_PHASE", "WaitFor",
           "WaitResult", "open_store", "load_manifests", "plan", "reconcile", "unhealthy", "status", "get",
           "rollback", "history", "wait", "parse_wait_for", "age", "unreadable"]
