"""Stepped rollouts in the engine: measure what the step machine needs, commit what it decides.

core/steps.py decides; this module does the I/O around it:
- `step_inputs`: when the current step is due for a look, the online verdict (engine/online.analyse or
  interleave_verdict over [stepStartedAt, now] of the event log) or the confirm webhook's answer;
- `commit_step`: one step transition = routing (weight, mirror, interleave shares) + step state
  (rollout.json) + one journal record, as one atomic store transition; then a webhook event;
- `apply_command`: the verbs promote / promote --full / abort / retry (CLI, Python API, operator
  annotation) drive the machine from the stored state, under the store lock.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Callable

from controller.core import steps as S
from controller.core.types import Routing
from controller.engine.backend import sync_alias
from controller.errors import InvalidInput
from controller.manifest.load import LoadedManifest
from controller.store.fs import Store, print_lock_wait

Notify = Callable[[str, dict[str, Any]], None]


def check_gate_metrics(loaded: LoadedManifest) -> None:
    """Online gate metric names are known to core/online (the manifest package cannot import core)."""
    from controller.core.online import known_metric

    for i, step in enumerate(loaded.manifest.spec.rollout.steps or ()):
        for j, gate in enumerate(step.analysis.gates if step.analysis else ()):
            if not known_metric(gate.metric):
                raise InvalidInput(f"unknown online metric {gate.metric!r}; see docs/rollouts.md for the list",
                                   file=loaded.source, field=f"spec.rollout.steps[{i}].analysis.gates[{j}].metric",
                                   value=gate.metric)


def stored_state(store: Store, name: str) -> S.RolloutState | None:
    raw = store.rollout(name)
    return S.RolloutState.from_dict(raw) if raw else None


def step_inputs(loaded: LoadedManifest, store: Store, state: S.RolloutState | None, now: float, *,
                ask_confirm: bool, rollout_digest: str) -> tuple[S.Verdict | None, S.Confirmation | None]:
    """(verdict, confirmation) for the current step of `state` when a look is due; (None, None) otherwise.

    The confirm receiver is asked only when `ask_confirm` (a real reconcile under the lock): a dry
    run must not tell a receiver that a step or a promotion is about to happen.
    """
    rollout = loaded.manifest.spec.rollout
    if state is None or rollout.steps is None or state.aborted or state.promoted:
        return None, None
    if not S.same_rollout(state, loaded.digest, rollout_digest):
        return None, None  # the plan restarts the steps: no look, no confirm ask for the old ones
    need = S.due_input(state, now)
    if need == "confirm":
        if not ask_confirm or rollout.confirm is None:
            return None, None
        return None, ask(rollout.confirm, loaded.name, state)
    if need is None:
        return None, None
    body = state.current[need]  # type: ignore[index]
    return online_verdict(store, loaded.name, state, need, body, now), None


def online_verdict(store: Store, name: str, state: S.RolloutState, kind: str, body: dict[str, Any],
                   now: float) -> S.Verdict:
    """The online gates (analysis) or the preference test (interleave) over [stepStartedAt, now]."""
    from controller.engine import online

    alpha = float(body.get("alpha", 0.05))
    if kind == "interleave":
        result = online.interleave_verdict(store.root, name, stable=state.stable, candidate=state.version,
                                           since=state.started_at, until=now,
                                           min_queries=int(body.get("minQueries", 200)), alpha=alpha,
                                           margin=float(body.get("margin", 0.0)))
    else:
        result = online.analyse(store.root, name, stable=state.stable, candidate=state.version,
                                since=state.started_at, until=now, gates=online_gates(body), alpha=alpha)
    details = json.loads(json.dumps(result.to_json(), default=str))
    return S.Verdict(result.status, result.message, details)


def online_gates(body: dict[str, Any]) -> list[Any]:
    """The step's gates as core.online.OnlineGate; a gate without minSamples takes the step's."""
    from controller.core.online import OnlineGate

    default = int(body.get("minSamples", 100))
    return [OnlineGate(g["metric"], max_drop=g.get("maxDrop"), max_increase=g.get("maxIncrease"),
                       min=g.get("min"), max=g.get("max"), min_samples=int(g.get("minSamples") or default))
            for g in body.get("gates") or ()]


def ask(confirm: Any, name: str, state: S.RolloutState) -> S.Confirmation:
    """Flagger's confirm gates: POST what is about to happen; 200 means go, anything else (or no answer) wait."""
    from controller.engine.notify import allow_private_default, post_json

    step = state.current
    body = json.dumps({"index": name, "event": S.CONFIRM_EVENTS.get(state.pending or "", "Confirm"),
                       "gate": state.pending, "version": state.version, "stable": state.stable,
                       "step": state.index if step is not None else None, "steps": len(state.steps),
                       "next": S.describe(step) if step is not None else "promotion", "weight": state.weight,
                       "mirror": state.mirror, "interleave": state.interleave,
                       "waitingSince": state.started_at}).encode()
    try:
        status = post_json(confirm.url, body, allow_private_default(), timeout=confirm.timeout)
    except Exception as exc:  # noqa: BLE001 - an unreachable receiver means "not yet", never an error
        return S.Confirmation(False, _unreachable(exc, confirm.timeout))
    return S.Confirmation(status == 200, f"HTTP {status}")


def _unreachable(exc: Exception, timeout: float) -> str:
    if isinstance(exc, TimeoutError):  # socket.timeout is TimeoutError since Python 3.10
        return f"no answer within {timeout:g}s"
    kind = "refused by the webhook policy" if type(exc).__name__ == "WebhookRefused" else "unreachable"
    return f"{kind} ({type(exc).__name__}: {exc})"


# webhook events of the confirm gates (the others are StepTransition, RolloutAborted, AliasSwitched)
CONFIRM_EVENT_NAMES = {S.AWAITING_CONFIRMATION: "AwaitingConfirmation",
                       S.CONFIRMATION_WITHHELD: "ConfirmationWithheld"}


def commit_step(store: Store, name: str, alias: str, action_kind: str, version: str, reason: str, message: str,
                state: dict[str, Any], *, notify: Notify, manifest_digest: str | None, source: str | None,
                extra: dict[str, Any] | None = None) -> None:
    """Routing + step state + journal record in one transition; the webhook event after the commit."""
    from controller.engine.journal import journal_record

    old = store.routing(name)
    st = S.RolloutState.from_dict(state)
    if action_kind == "promote":
        new = Routing(stable=st.version, candidate=None, weight=0.0,
                      held=tuple(h for h in old.held if h != st.version))
    else:
        candidate, weight, mirror, interleave = S.routing_of(st)
        new = replace(old, stable=old.stable, candidate=candidate, weight=weight, mirror=mirror,
                      interleave=interleave)
    step = {"index": st.index, "of": len(st.steps), "step": S.describe(st.current) if st.current else None,
            "startedAt": st.started_at, "mirror": new.mirror, "interleave": new.interleave,
            "aborted": st.aborted, "analysis": st.analysis,
            **({"awaitingConfirmation": st.pending, "confirmation": st.confirmation} if st.confirm else {})}
    record = journal_record(name, alias, old, new, reason, message, manifest_digest=manifest_digest,
                            source=source, extra={"step": step, **(extra or {})})
    store.commit_transition(name, journal=record, routing=(alias, new) if new != old else None, rollout=state)
    if new.stable != old.stable:  # a promotion by step or by `controller promote`: the native alias follows
        sync_alias(store, name, previous=old.stable)
    event = "AliasSwitched" if action_kind == "promote" else (
        "RolloutAborted" if st.aborted else CONFIRM_EVENT_NAMES.get(reason, "StepTransition"))
    notify(name, {"event": event, "reason": reason, "version": version, "message": message,
                  "stable": new.stable, "candidate": new.candidate, "weight": new.weight, "mirror": new.mirror,
                  "interleave": new.interleave, "step": st.index, "stepStartedAt": st.started_at,
                  "analysis": st.analysis, **(extra or {})})


COMMAND_ANNOTATION = "indexops.dev/command"


def apply_annotation(store: Store, name: str, value: str, *, notify: Notify = lambda name, event: None,
                     lock_timeout: float | None = None) -> str | None:
    """The operator's `indexops.dev/command` annotation: `promote`, `promote-full`, `abort` or `retry`,
    optionally `:anything` after it so the same command can be asked again. Each value is applied once
    (recorded in the step state); returns what was done, or None when this value was already consumed.
    A command that does not apply is consumed too (and said), so it is not retried forever."""
    command = value.split(":", 1)[0].strip()
    state = stored_state(store, name)
    if state is None or state.consumed == value:
        return None
    try:
        apply_command(store, name, command, lock_timeout=lock_timeout, notify=notify, source="annotation",
                      token=value)
        return f"{COMMAND_ANNOTATION}={value}: {command} applied"
    except InvalidInput as exc:
        with store.lock(timeout=lock_timeout):
            current = stored_state(store, name)
            if current is not None:
                store.commit_transition(name, rollout=replace(current, consumed=value).to_dict())
        return f"{COMMAND_ANNOTATION}={value} refused: {exc.reason}"


def apply_command(store: Store, name: str, command: str, *, lock_timeout: float | None = None,
                  notify: Notify = lambda name, event: None, now: float | None = None,
                  on_lock_wait: Callable[[str], None] = print_lock_wait, source: str = "cli",
                  token: str | None = None) -> dict[str, Any]:
    """promote, promote-full, abort or retry the stepped rollout of `name`; returns the new status.

    `token` (an annotation value) is recorded with the state so the operator applies it once."""
    from controller.engine.status import persist_status

    if command not in S.COMMANDS:
        raise InvalidInput(f"unknown rollout command {command!r}; use one of {', '.join(S.COMMANDS)}",
                           field="command", value=command)
    store.require_index(name)
    with store.lock(timeout=lock_timeout, on_wait=on_lock_wait):
        state = stored_state(store, name)
        problem = _refusal(store, name, state, command)
        if problem:
            raise InvalidInput(problem, field="command", value=command)
        assert state is not None
        now = time.time() if now is None else now
        if token is not None:
            state = replace(state, consumed=token)
        decision = S.advance(state, now, command=command)
        alias = store.routing_record(name).get("alias") or name
        for t in decision.transitions:
            commit_step(store, name, alias, "promote" if t.promote else "step", t.state.version, t.reason,
                        f"{command}: {t.message}", t.state.to_dict(), notify=notify,
                        manifest_digest=state.manifest_digest, source=source, extra={"command": command})
        if decision.changed and not decision.transitions:
            store.commit_transition(name, rollout=decision.state.to_dict())
        return persist_status(store, name)


def _refusal(store: Store, name: str, state: S.RolloutState | None, command: str) -> str | None:
    """Why `command` cannot apply now (a sentence), or None."""
    if state is None:
        return (f"index {name!r} has no stepped rollout: `controller {command.split('-')[0]}` applies to "
                "spec.rollout.steps (a manifest without steps is promoted by its rollout.percentage)")
    if state.promoted:
        return f"the rollout of {state.version} is already promoted: nothing to {command.split('-')[0]}"
    if command == "retry" and not state.aborted:
        return f"the rollout of {state.version} is not aborted (step {state.index + 1}): nothing to retry"
    if command != "retry" and state.aborted:
        return (f"the rollout of {state.version} is aborted ({state.message}); `controller retry {name}` "
                "starts it again")
    if store.routing(name).stable != state.stable:
        return (f"the stable version changed to {store.routing(name).stable} since the rollout of {state.version} "
                f"began beside {state.stable}; reconcile first")
    return None


def next_due(store: Store, names: list[str] | None = None, now: float | None = None) -> float | None:
    """The earliest time (epoch s) a stepped rollout of the store is due: loops sleep until then, not longer."""
    now = time.time() if now is None else now
    due = None
    for name in store.indexes() if names is None else names:
        try:
            state = stored_state(store, name)
        except (KeyError, ValueError, TypeError, OSError):
            continue
        if state is None:
            continue
        at = S.summary_now(state, now)["nextDueAt"]
        if at is not None and (due is None or at < due):
            due = at
    return due
