"""kopf handlers: parse the resource, call engine.reconcile_index, write status once.

Level-based: the same cycle runs on create, on resume (operator restart), on a
spec change and on a timer, so a store changed behind the operator's back (or a
missed event) is corrected at the next tick. Every decision (phase, conditions,
gates, rollback) comes from the engine; this module maps its outcome to
Kubernetes: a status patch, Events, a routing ConfigMap, metrics, and kopf's
error classes (InvalidInput -> PermanentError, anything else -> TemporaryError
with exponential backoff).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import kopf

from controller.core.steps import COMMANDS
from controller.engine.reconcile import Hooks, remove_index, reconcile_index
from controller.engine.rollout import COMMAND_ANNOTATION, apply_annotation, stored_state
from controller.engine.status import persist_status
from controller.errors import InvalidInput
from controller.progress import silent
from controller.operator.body import (ON_DELETE_ANNOTATION, loaded_from_body, on_delete_policy, plain,
                                      resource_ref, store_for)
from controller.operator.faults import CycleStopped, LeadershipLost, classify
from controller.operator.jobs import JobApi, JobPending, JobSettings, ensure_embedded
from controller.operator.metrics import Metrics
from controller.operator.routing import NullPublisher, RoutingPublisher, owner_reference, routing_record
from controller.operator.statuswriter import MemoryStatusWriter, StatusWriter
from controller.store.fs import Store
from controller.manifest.crd import GROUP, PLURAL, VERSION

log = logging.getLogger("controller.operator")

FINALIZER = "indexops.dev/finalizer"
WARNING_EVENTS = {"GateFailed", "RolledBack"}
MAX_BACKOFF_S = 300.0
COMMAND_REFUSED = "CommandRefused"  # the Warning Event's reason, and the CommandAccepted condition's


@dataclass(frozen=True)
class OperatorConfig:
    store_root: Path
    data_dir: Path
    data_roots: tuple[Path, ...] = ()
    interval: float = 300.0  # seconds between level-based re-reconciles
    on_delete_default: str = "retain"
    base_backoff: float = 5.0  # first retry delay after a temporary error; doubles per retry
    api_backoffs: tuple[float, ...] = (1, 1, 2, 3, 5, 8, 13, 21)  # kopf's retries of failed API calls
    watch_timeout: float = 300.0  # server-side watch timeout: watches are re-established at least this often
    api_timeout: float = 30.0  # one API request (kopf's and ours); a hung API server fails the cycle, retried
    auth_backoff: float = 60.0  # retry delay after 401/403: RBAC must change first, never a hot loop
    store_full_backoff: float = 60.0  # retry delay after ENOSPC/EROFS on the store volume
    # How often kopf re-checks a timer still finishing its cycle when the resource is deleted. kopf gives
    # timers no cancellation timeout: it only re-checks after this delay (its default, 60 s, held the
    # finalizer that long after the timer had already exited).
    stop_poll: float = 1.0

    def __post_init__(self) -> None:
        # kopf's timer ticks every min(interval, 10 s): 0 or less made it a hot loop; nan or inf is no schedule
        if not (math.isfinite(self.interval) and self.interval > 0):
            raise InvalidInput("the re-reconcile interval must be a number of seconds greater than 0",
                               field="interval", value=self.interval)


@dataclass
class Runtime:
    """What the handlers share: configuration, metrics, the ConfigMap publisher, per-namespace locks."""

    config: OperatorConfig
    metrics: Metrics = field(default_factory=Metrics)
    publisher: RoutingPublisher = field(default_factory=NullPublisher)
    status_writer: StatusWriter = field(default_factory=MemoryStatusWriter)
    post_event: Callable[..., None] = kopf.event  # replaced in unit tests
    _locks: dict[str, threading.Lock] = field(default_factory=lambda: defaultdict(threading.Lock))
    _guard: threading.Lock = field(default_factory=threading.Lock)
    ready: threading.Event = field(default_factory=threading.Event)
    last_cycle: float = field(default_factory=time.monotonic)
    # False the moment the Lease is lost (main.run wires LeaseElector.holds_lease): checked before each write
    may_write: Callable[[], bool] = lambda: True
    # spec.reembed: Jobs embed before the build (None: the reconcile embeds in-process, as without it)
    jobs: tuple[JobApi, JobSettings] | None = None
    # resource -> monotonic time before which no trigger (create/update/timer) may retry it: a 401/403,
    # a full store or a Retry-After holds every handler of that resource, not only the one that failed
    _hold: dict[str, float] = field(default_factory=dict)

    # resource -> epoch time its stepped rollout is next due (a pause ends, an analysis look): the short
    # timer tick reconciles it then instead of waiting for the full interval
    _due: dict[str, float] = field(default_factory=dict)
    _last_full: dict[str, float] = field(default_factory=dict)
    # resource -> the last command annotation a cycle handled (applied or refused): the tick need not run again
    consumed: dict[str, str] = field(default_factory=dict)
    # resource -> what became of its command annotation's value, shown in the status while the value stays
    commands: dict[str, "CommandOutcome"] = field(default_factory=dict)
    # uids of which a cycle has ended (any trigger, any outcome): until then a cycle is the object's first
    _cycled: set[str] = field(default_factory=set)

    def note_cycled(self, uid: str | None) -> None:
        with self._guard:
            self._cycled.add(uid or "")

    def cycled_once(self, uid: str | None) -> bool:
        with self._guard:
            return (uid or "") in self._cycled

    def forget_cycled(self, uid: str | None) -> None:
        with self._guard:
            self._cycled.discard(uid or "")

    def note_due(self, ref: str, due: float | None) -> None:
        with self._guard:
            self._last_full[ref] = time.time()
            if due is None:
                self._due.pop(ref, None)
            else:
                self._due[ref] = due

    def timer_due(self, ref: str) -> bool:
        """On a short tick: whether this resource's step is due, or its full interval has passed."""
        now = time.time()
        with self._guard:
            due = self._due.get(ref)
            last = self._last_full.get(ref)
        return last is None or now >= last + self.config.interval or (due is not None and now >= due)

    def hold(self, ref: str, seconds: float) -> None:
        with self._guard:
            self._hold[ref] = max(self._hold.get(ref, 0.0), time.monotonic() + seconds)

    def held_for(self, ref: str) -> float:
        with self._guard:
            left = self._hold.get(ref, 0.0) - time.monotonic()
            if left <= 0:
                self._hold.pop(ref, None)
            return max(0.0, left)

    def guard(self) -> None:
        """Raise LeadershipLost when this replica may no longer write (before any write)."""
        if not self.may_write():
            raise LeadershipLost("the leader lease was lost: this replica stops writing")

    def lock_for(self, namespace: str | None) -> threading.Lock:
        # One store per namespace and one writer per store: serialise here rather than fail on the flock.
        with self._guard:
            return self._locks[namespace or ""]


STEP_TICK_S = 10.0  # the timer's tick: a due rollout step waits at most this long past its time
# Stop reasons a timer honours even in an object's first cycle: the operator going away, not the object.
OPERATOR_STOPS = kopf.DaemonStoppingReason.OPERATOR_EXITING | kopf.DaemonStoppingReason.OPERATOR_PAUSING


def never() -> bool:
    return False


def check_writable(rt: Runtime, stopped: Callable[[], bool]) -> None:
    """Before each write: stop when the lease is lost, or when kopf stopped this cycle's timer."""
    rt.guard()
    if stopped():  # the resource is being deleted: the finalizer waits for this cycle, so end it now
        raise CycleStopped("kopf stopped the timer (the resource is being deleted, or the operator exits)")


def backoff(retry: int, base: float) -> float:
    return min(MAX_BACKOFF_S, base * (2 ** max(0, retry)))


def cr_status(status: dict[str, Any], generation: int | None) -> dict[str, Any]:
    """The engine's status plus what Kubernetes clients expect: observedGeneration, also per condition."""
    out = dict(status)
    out["observedGeneration"] = generation
    out["conditions"] = [{**c, "observedGeneration": generation} for c in status.get("conditions", [])]
    return out


def error_status(rt: Runtime, body: dict[str, Any], message: str, *, invalid: bool = False) -> dict[str, Any]:
    """Stalled status for a cycle that could not run, from the engine's one status function.

    The store's status says Stalled too, except for an invalid spec: as with the CLI, bad input
    writes nothing to the store, and only the resource's status names it.
    """
    meta = body.get("metadata", {})
    name = meta.get("name", "")
    store = store_for(rt.config.store_root, meta.get("namespace"))
    alias = (body.get("spec") or {}).get("alias") or name
    status = persist_status(store, name, alias=alias, error=message, previous=body.get("status") or None,
                            write=not invalid)
    return cr_status(status, meta.get("generation"))


def event_message(event: dict[str, Any]) -> str:
    if event.get("message"):
        return str(event["message"])
    if event.get("event") == "ShadowBuilt":
        return (f"built shadow version {event.get('version')} from {event.get('documents')} documents "
                f"({event.get('embedded')} embedded, the rest reused)")
    return f"{event.get('event')} {event.get('version')}"


def make_hooks(rt: Runtime, body: dict[str, Any], stopped: Callable[[], bool] = never) -> Hooks:
    meta = body.get("metadata", {})
    namespace, name = meta.get("namespace") or "", meta.get("name", "")

    def on_transition(_index: str, event: dict[str, Any]) -> None:
        check_writable(rt, stopped)  # between two engine steps: no further step after a lost lease or a stop
        kind = str(event.get("event"))
        rt.metrics.transitions.labels(namespace, name, kind).inc()
        event_type = "Warning" if kind in WARNING_EVENTS else "Normal"
        try:
            rt.post_event(body, type=event_type, reason=kind, message=event_message(event)[:1024])
        except Exception as exc:  # an Event is a notification: never fail the cycle over one
            log.warning("could not post the %s event for %s: %s", kind, resource_ref(namespace, name), exc)

    def progress(label: str) -> Any:
        check_writable(rt, stopped)  # before a build or an embedding pass writes to the store
        return silent

    return Hooks(journal_extra={"resource": f"{namespace}/{name}", "generation": meta.get("generation")},
                 on_transition=on_transition, progress=progress)


@dataclass(frozen=True)
class CommandOutcome:
    """What became of one value of the `indexops.dev/command` annotation (status.lastCommand)."""

    value: str
    applied: bool
    message: str

    def to_status(self) -> dict[str, Any]:
        return {"value": self.value, "result": "Applied" if self.applied else "Refused", "message": self.message}

    def condition(self, generation: int | None) -> dict[str, Any]:
        return {"type": "CommandAccepted", "status": "True" if self.applied else "False",
                "reason": "CommandApplied" if self.applied else COMMAND_REFUSED,
                "message": f"{COMMAND_ANNOTATION}={self.value}: {self.message}"[:1024],
                "observedGeneration": generation}


def command_outcome(store: Store, name: str, value: str, notify: Callable[..., None]) -> CommandOutcome | None:
    """Apply the annotation's command (once per value); None when this value was handled before.

    The engine says nothing when the index has no stepped rollout (it records each value in the
    rollout's state, and there is none), so that refusal, like a misspelt command, is made here:
    `controller abort` refuses both with exit 2, and the annotation must not be silently ignored.
    """
    verb = value.split(":", 1)[0].strip()
    if verb not in COMMANDS:
        return CommandOutcome(value, False, f"unknown command {verb!r}; use one of {', '.join(COMMANDS)} "
                                            "(optionally followed by :anything to ask again)")
    said = apply_annotation(store, name, value, notify=notify)
    if said is not None:
        # "<annotation>=<value>: <verb> applied" or "<annotation>=<value> refused: <why>"
        refused = said.startswith(f"{COMMAND_ANNOTATION}={value} refused")
        return CommandOutcome(value, not refused, said.split(": ", 1)[-1])
    if stored_state(store, name) is None:
        return CommandOutcome(value, False, f"{verb} applies to a stepped rollout (spec.rollout.steps) and {name} "
                                            "has none; a rollout.percentage canary follows its spec: change "
                                            "spec.rollout.percentage or spec.index.version instead")
    return None


def outcome_in_status(body: dict[str, Any], value: str) -> CommandOutcome | None:
    """The outcome the resource's status already shows for this value (after an operator restart)."""
    shown = (body.get("status") or {}).get("lastCommand") or {}
    if shown.get("value") != value:
        return None
    return CommandOutcome(value, shown.get("result") == "Applied", str(shown.get("message") or ""))


def report_command(rt: Runtime, body: dict[str, Any], ref: str, value: str | None,
                   outcome: CommandOutcome | None) -> CommandOutcome | None:
    """The command outcome to show in the status; a refusal not told before becomes a Warning Event."""
    if not value:
        rt.commands.pop(ref, None)
        return None
    known = rt.commands.get(ref)
    known = known if known is not None and known.value == value else outcome_in_status(body, value)
    if outcome is None:  # handled in an earlier cycle
        return known
    rt.commands[ref] = outcome
    if outcome.applied:
        log.info("%s: %s=%s: %s", ref, COMMAND_ANNOTATION, value, outcome.message)
    elif outcome != known:  # once per value: the cycles after it refuse the same value again
        log.warning("%s: %s=%s refused: %s", ref, COMMAND_ANNOTATION, value, outcome.message)
        try:
            rt.post_event(body, type="Warning", reason=COMMAND_REFUSED,
                          message=f"{COMMAND_ANNOTATION}={value} was not applied: {outcome.message}"[:1024])
        except Exception as exc:  # an Event is a notification: never fail the cycle over one
            log.warning("could not post the %s event for %s: %s", COMMAND_REFUSED, ref, exc)
    return outcome


def with_command(status: dict[str, Any], outcome: CommandOutcome | None) -> dict[str, Any]:
    if outcome is None:
        return status
    return {**status, "lastCommand": outcome.to_status(),
            "conditions": [*status.get("conditions", []), outcome.condition(status.get("observedGeneration"))]}


def reconcile_resource(rt: Runtime, body: dict[str, Any], stopped: Callable[[], bool] = never) -> dict[str, Any]:
    """One cycle for one resource; returns the status to patch. Raises the engine's errors."""
    meta = body.get("metadata", {})
    namespace = meta.get("namespace")
    loaded = loaded_from_body(body, rt.config.data_dir, rt.config.data_roots)
    ref = resource_ref(namespace or "", loaded.name)
    with rt.lock_for(namespace):
        check_writable(rt, stopped)  # a timer that waited here behind the finalizer must not rebuild the index
        store = store_for(rt.config.store_root, namespace)
        hooks = make_hooks(rt, body, stopped)
        reembed = None
        if rt.jobs is not None:  # while a Job owns the embedding work, JobPending: no build, no embedding here
            reembed = ensure_embedded(rt.jobs[0], rt.jobs[1], loaded, store, namespace or "default",
                                      owner_reference(body))
        command = (meta.get("annotations") or {}).get(COMMAND_ANNOTATION)
        outcome = None
        # promote/abort/retry by annotation, once per value: also a value the status already reports (refused
        # before any stepped rollout existed, the engine has no state that remembers it; it must not hit the
        # first stepped rollout that starts later)
        if command and store.index_dir(loaded.name).is_dir() and outcome_in_status(body, command) is None:
            outcome = command_outcome(store, loaded.name, command, hooks.on_transition)
            # Only now: a cycle that failed before this point (held after a fault, say) leaves the value for
            # the next tick instead of skipping it until the full interval.
            rt.consumed[ref] = command
        result = reconcile_index(loaded, store, hooks=hooks)
        routing = store.routing(loaded.name)  # with the mirror and interleave shares the status does not carry
        if result.status is not None:
            rt.note_due(ref, (result.status.get("rollout") or {}).get("nextDueAt"))
        status = cr_status(result.status or {}, meta.get("generation"))
        if reembed is not None:
            status["reembed"] = reembed
        check_writable(rt, stopped)
        status = with_command(status, report_command(rt, body, ref, command, outcome))
        # Under the lock, like the store's change it mirrors: two cycles (a create handler and a timer, or a
        # deleted object's and its same-named successor's) publish in the order they changed the store, and
        # never both create the ConfigMap (409 AlreadyExists); the finalizer's removal waits for it.
        rt.publisher.publish(namespace or "default", loaded.name, owner_reference(body),
                             routing_record(status, routing))
    return status


def run_cycle(rt: Runtime, body: Any, retry: int, trigger: str, stopped: Callable[[], bool] = never) -> None:
    """The handler body shared by create/resume/update/timer: errors become kopf's error classes.

    `stopped` is the timer's stop flag: once set, the cycle ends at its next step and writes nothing more.
    """
    raw = plain(body)
    meta = raw.get("metadata", {})
    namespace, name = meta.get("namespace") or "", meta.get("name", "")
    ref = resource_ref(namespace, name)
    waiting = rt.held_for(ref)
    if waiting > 0:  # another trigger of this resource hit a fault that asked for a pause
        raise kopf.TemporaryError(f"{ref}: held after a fault; retry in {waiting:.1f}s", delay=waiting)
    started = time.monotonic()
    result = "error"
    try:
        try:
            status = reconcile_resource(rt, raw, stopped)
        except InvalidInput as exc:
            result = "invalid"
            note_invalid(rt, ref, meta)
            check_writable(rt, stopped)
            rt.status_writer.write(raw, error_status(rt, raw, str(exc), invalid=True))
            raise kopf.PermanentError(f"{exc} (fix the resource; it is retried when its spec changes)") from exc
        check_writable(rt, stopped)
        rt.status_writer.write(raw, status)
        result = "ok"
    except kopf.PermanentError:
        raise
    except JobPending as exc:  # not a fault: the Job owns the work; look again after its poll interval
        result = "waiting"
        log.info("%s: %s", ref, exc)
        check_writable(rt, stopped)
        rt.status_writer.write(raw, {**(raw.get("status") or {}), "reembed": exc.status})
        raise kopf.TemporaryError(f"{ref}: {exc}", delay=exc.delay) from exc
    except Exception as exc:  # ControllerError, OSError, API errors: all may pass on a later try
        fault = classify(exc, ref)
        if fault.resource_gone:  # lease lost, or the resource was deleted (or recreated) meanwhile
            result = fault.kind.lower()
            log.warning("%s: cycle abandoned, nothing more written: %s", ref, exc)
            return
        minimum = {"Forbidden": rt.config.auth_backoff, "Unauthorized": rt.config.auth_backoff,
                   "StoreFull": rt.config.store_full_backoff, "StoreReadOnly": rt.config.store_full_backoff}
        pause = minimum.get(fault.kind, fault.min_delay)
        delay = max(backoff(retry, rt.config.base_backoff), pause)
        if pause > 0:
            rt.hold(ref, pause)
        if retry >= 2 or fault.write_status_now:  # a blip should not flip the phase; a repeat or a hard fault should
            _write_fault_status(rt, raw, exc, fault.condition,
                                store_broken=fault.kind in ("StoreFull", "StoreReadOnly"))
        raise kopf.TemporaryError(f"{ref}: {fault.kind}: {exc}; retry {retry + 1} in {delay:g}s",
                                  delay=delay) from exc
    finally:
        rt.note_cycled(meta.get("uid"))
        rt.metrics.reconciles.labels(namespace, name, result).inc()
        rt.metrics.duration.labels(namespace, name).observe(time.monotonic() - started)
        rt.last_cycle = time.monotonic()
    rt.metrics.observe_status(namespace, name, status)
    log.info("%s reconciled (%s): phase %s, stable %s, candidate %s at %g%%", ref, trigger, status.get("phase"),
             (status.get("stable") or {}).get("version"), (status.get("candidate") or {}).get("version"),
             status.get("weight") or 0.0)


def note_invalid(rt: Runtime, ref: str, meta: dict[str, Any]) -> None:
    """An invalid spec waits for its fix (the update handler) or the full interval, not the next short tick.

    Its command annotation cannot apply before the spec is fixed, so it does not make the tick due either.
    """
    rt.note_due(ref, None)
    command = (meta.get("annotations") or {}).get(COMMAND_ANNOTATION)
    if command:
        rt.consumed[ref] = command


def timer_stop(rt: Runtime, uid: str | None, stopped: Any) -> Callable[[], bool]:
    """The timer's stop flag as its cycle reads it: a deletion stops any cycle but the object's first.

    kopf starts an object's timer before its create handler ran, and delivers no create at all when
    its finalizer patch conflicts (the timer is the net). Under load the timer's tick then runs the
    object's first cycle. A deletion must not stop that one half-way, any more than it stops a create
    handler's cycle (kopf runs the delete handler after it): else a shadow is left built but never
    promoted, and a new object of the same name starts from that half state instead of from the
    stable version the first cycle would have made. From the second cycle on, the timer is the
    level-based re-check, which a deletion ends at the next step. The operator exiting or pausing
    stops every cycle.
    """
    def is_stopped() -> bool:
        if not stopped.is_set():
            return False
        reason = stopped.reason
        return rt.cycled_once(uid) or (reason is not None and bool(reason & OPERATOR_STOPS))
    return is_stopped


def timer_tick(rt: Runtime, body: Any, retry: int, stopped: Any) -> None:
    """The timer: the object's first cycle if no handler ran one yet, then a cycle when one is due.

    `stopped` is kopf's stop flag (`is_set()`, `reason`); see timer_stop for what it stops.
    """
    meta = plain(body).get("metadata", {})
    ref = resource_ref(meta.get("namespace") or "", meta.get("name", ""))
    uid = meta.get("uid")
    command = (meta.get("annotations") or {}).get(COMMAND_ANNOTATION)
    first = not rt.cycled_once(uid)  # also a recreated object of the same name: due at once
    if not first and not rt.timer_due(ref) and not (command and command != rt.consumed.get(ref)):
        return
    # the cycle marks the command consumed once it handled it (reconcile_resource), not before
    run_cycle(rt, body, retry, "timer", stopped=timer_stop(rt, uid, stopped))


def _write_fault_status(rt: Runtime, raw: dict[str, Any], exc: Exception, condition: dict[str, Any] | None,
                        store_broken: bool = False) -> None:
    """Stalled status naming the fault, plus its own condition (APIAccess, StoreWritable) when it has one."""
    if not rt.may_write():
        return
    try:
        message = condition["message"] if condition else f"{type(exc).__name__}: {exc}"
        # a full or read-only store cannot take the status as well: only the resource's status names it
        status = error_status(rt, raw, message, invalid=store_broken)
        if condition:
            status["conditions"] = [*status.get("conditions", []),
                                    {**condition, "observedGeneration": status.get("observedGeneration")}]
        rt.status_writer.write(raw, status)
    except Exception:  # noqa: S110 - the API is failing too; the retry reports it
        pass


def finalize(rt: Runtime, body: Any, retry: int) -> None:
    """On delete: keep or remove the store's versions per the annotation, drop the ConfigMap and series."""
    raw = plain(body)
    meta = raw.get("metadata", {})
    namespace, name = meta.get("namespace"), meta.get("name", "")
    try:
        policy = on_delete_policy(raw, rt.config.on_delete_default)
    except InvalidInput as exc:
        # Never block a deletion on a typo: keeping data is the safe reading of an unclear wish.
        log.warning("%s; retaining the built versions", exc)
        policy = "retain"
    try:
        store = store_for(rt.config.store_root, namespace)
        rt.guard()
        with rt.lock_for(namespace):  # after any cycle still publishing (a timer's first cycle finishes)
            if policy == "delete":
                remove_index(store, name)
            rt.publisher.remove(namespace or "default", name, meta.get("uid"))
    except Exception as exc:
        delay = backoff(retry, rt.config.base_backoff)
        raise kopf.TemporaryError(f"{resource_ref(namespace, name)}: cleanup failed: {exc}", delay=delay) from exc
    rt.metrics.forget(namespace or "", name)
    rt.forget_cycled(meta.get("uid"))
    rt.commands.pop(resource_ref(namespace or "", name), None)  # a successor of the same name starts afresh
    where = store.index_dir(name)
    message = (f"deleted every version of {name} from the store ({where})" if policy == "delete" else
               f"kept the built versions of {name} in the store ({where}); set the annotation "
               f"{ON_DELETE_ANNOTATION}=delete to remove them with the resource")
    log.info("%s finalized: %s", resource_ref(namespace, name), message)
    try:
        rt.post_event(raw, type="Normal", reason="IndexDeleted" if policy == "delete" else "IndexRetained",
                      message=message)
    except Exception as exc:
        log.warning("could not post the deletion event for %s: %s", resource_ref(namespace, name), exc)


def configure_settings(settings: kopf.OperatorSettings, config: OperatorConfig) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # Only our explicit lifecycle Events and warnings reach `kubectl describe`, not every handler log line.
    settings.posting.level = logging.WARNING
    settings.networking.error_backoffs = config.api_backoffs
    settings.watching.server_timeout = config.watch_timeout
    settings.watching.client_timeout = config.watch_timeout + 30
    # kopf's own requests: bounded (its default is 300 s), and a 429's Retry-After always honoured,
    # also when it is shorter than the next backoff
    settings.networking.request_timeout = config.api_timeout
    settings.networking.connect_timeout = min(10.0, config.api_timeout)
    settings.networking.enforce_retry_after = True
    settings.execution.max_workers = 4
    # A timer still in its cycle when the resource is deleted keeps the finalizer until kopf re-checks it.
    settings.background.cancellation_polling = config.stop_poll
    # The CRD is installed with the chart and the namespaces are given: no need to list and watch
    # namespaces or CRDs, which would also need cluster-wide RBAC the chart does not grant.
    settings.scanning.disabled = True


def build_registry(rt: Runtime) -> kopf.OperatorRegistry:
    """A fresh registry with every handler bound to `rt` (tests run several operators in one process)."""
    registry = kopf.OperatorRegistry()
    resource = (GROUP, VERSION, PLURAL)

    @kopf.on.startup(registry=registry)
    def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings, rt.config)
        rt.ready.set()

    @kopf.on.resume(*resource, registry=registry)
    def _on_resume(body: Any, retry: int, **_: Any) -> None:
        run_cycle(rt, body, retry, "resume")

    @kopf.on.create(*resource, registry=registry)
    def _on_create(body: Any, retry: int, **_: Any) -> None:
        run_cycle(rt, body, retry, "create")

    @kopf.on.update(*resource, field="spec", registry=registry)
    def _on_update(body: Any, retry: int, **_: Any) -> None:
        run_cycle(rt, body, retry, "update")

    tick = min(rt.config.interval, STEP_TICK_S)  # steps and command annotations are looked at this often

    @kopf.timer(*resource, interval=tick, initial_delay=tick, registry=registry)
    def _on_timer(body: Any, retry: int, stopped: Any, **_: Any) -> None:
        # kopf sets `stopped` when the resource is being deleted: the finalizer waits for this cycle to end
        timer_tick(rt, body, retry, stopped)

    @kopf.on.delete(*resource, registry=registry)
    def _on_delete(body: Any, retry: int, **_: Any) -> None:
        finalize(rt, body, retry)

    return registry
