"""The step machine of a progressive rollout (Argo Rollouts' vocabulary), pure.

(steps, rollout state, now, analysis verdict, operator command) -> (new state, transitions, next due time).

No clock, no store, no network: the engine reads the state from the store, asks the event log for a
verdict when `due_input` says one is due, calls `advance`, and commits every transition (routing,
state and a journal record) atomically. Because the state (step index, when the step started, the
last analysis look) lives in the store, a controller restarted mid-step resumes the same step, and a
pause's remaining time is counted from `started_at`, not from the restart.

Steps are kept as the manifest wrote them (camelCase dicts, e.g. {"setWeight": 10},
{"pause": {"duration": "10m"}}), so the verbs (promote, abort, retry) can drive the machine from
the stored state alone, without the manifest.

Semantics:
- setWeight N / setMirror N take effect and complete at once.
- pause {duration}: holds until started_at + duration; pause {}: until `promote`.
- analysis: online gates are looked at every `interval`; passed -> next step, failed -> abort,
  inconclusive past maxDuration -> abort (the message says it timed out), else wait.
- interleave {percentage}: that share of queries gets a team-draft merge while the preference test
  runs; decided like analysis; the share returns to 0 when the step ends.
- after the last step: promotion (the alias switches to the candidate).
- confirm gates (Flagger's confirm-rollout, confirm-traffic-increase, confirm-promotion): a rollout
  whose `confirm.before` names a gate holds *before* the step (or the promotion) it applies to, with
  nothing of that step applied yet, until the receiver says yes: `rollout` before the first step,
  `step` before every step, `trafficIncrease` before a step that shows the candidate's results to more
  users (setWeight above the current weight, interleave), `promotion` before the alias switches. The
  machine only says what it waits for; the engine asks the receiver and passes the answer in. One
  answer opens one gate; a no (or no answer) holds, and is journaled when it differs from the last.
- abort: weight, mirror and interleave go to 0 and the rollout stays aborted until retry (or a
  manifest change, which restarts the steps).
- restart: only a change of what defines the rollout (`rollout_fingerprint`: model, index, rollout)
  restarts the steps; `same_rollout` says whether a stored state still belongs to the manifest.
- operator annotation values: `consumed` outlives the rollout it was applied to (`begin` carries it),
  because the annotation stays on the object after it was applied.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, Mapping

from controller.durations import parse_duration

Command = Literal["promote", "promote-full", "abort", "retry"]
CONFIRM_GATES: tuple[str, ...] = ("rollout", "step", "trafficIncrease", "promotion")
CONFIRM_EVENTS = {"rollout": "ConfirmRollout", "step": "ConfirmStep", "trafficIncrease": "ConfirmTrafficIncrease",
                  "promotion": "ConfirmPromotion"}
COMMANDS: tuple[str, ...] = ("promote", "promote-full", "abort", "retry")
STEP_KINDS = ("setWeight", "setMirror", "pause", "analysis", "interleave")
DEFAULT_INTERVAL_S = 60.0
CONFIRM_INTERVAL_S = 30.0

# reasons of step transitions (journal records and webhook events carry them)
STEP_STARTED = "StepStarted"
STEP_SKIPPED = "StepPromoted"
STEPS_RESTARTED = "StepsRestarted"
ROLLOUT_ABORTED = "RolloutAborted"
ANALYSIS_FAILED = "AnalysisFailed"
ANALYSIS_TIMED_OUT = "AnalysisTimedOut"
ROLLOUT_RETRIED = "RolloutRetried"
STEPS_COMPLETE = "StepsComplete"
PROMOTED_FULL = "PromotedFull"
AWAITING_CONFIRMATION = "AwaitingConfirmation"
CONFIRMATION_WITHHELD = "ConfirmationWithheld"
STEP_CONFIRMED = "StepConfirmed"


def step_kind(step: dict[str, Any]) -> str:
    kinds = [k for k in STEP_KINDS if k in step]
    if len(kinds) != 1:
        raise ValueError(f"a step has exactly one of {', '.join(STEP_KINDS)}, got {sorted(step)}")
    return kinds[0]


def _seconds(value: Any, default: float | None) -> float | None:
    return default if value is None else parse_duration(str(value), "duration")


def describe(step: dict[str, Any]) -> str:
    kind = step_kind(step)
    body = step[kind]
    if kind in ("setWeight", "setMirror"):
        return f"{kind} {float(body):g}"
    if kind == "pause":
        return f"pause {body['duration']}" if (body or {}).get("duration") is not None else "pause (until promoted)"
    if kind == "interleave":
        return f"interleave {float(body['percentage']):g}%"
    return f"analysis ({len(body.get('gates') or [])} gates)"


@dataclass(frozen=True)
class RolloutState:
    """Where a rollout is; persisted in the store (rollout.json) and shown in status."""

    version: str  # the candidate the steps run for
    stable: str | None
    manifest_digest: str
    steps: tuple[dict[str, Any], ...]
    index: int = 0  # currentStepIndex; len(steps): every step done
    started_at: float = 0.0  # stepStartedAt, seconds since the epoch
    weight: float = 0.0
    mirror: float = 0.0
    interleave: float = 0.0
    aborted: bool = False
    promoted: bool = False
    message: str = ""  # the last transition, or why it is aborted
    analysis: dict[str, Any] | None = None  # the last verdict of the current step (value, threshold, counts)
    looked_at: float | None = None  # the last analysis look / confirm ask of the current step
    last_command: str | None = None  # the last operator command applied
    consumed: str | None = None  # the last operator annotation value applied: one value is applied once
    confirm: dict[str, Any] | None = None  # the confirm gate: {"url", "before": [gates]}; kept so verbs see it
    pending: str | None = None  # the confirm gate the step at `index` (or the promotion) waits behind
    confirmation: dict[str, Any] | None = None  # the receiver's last answer at that gate: ok, answer, askedAt
    # rollout_fingerprint of the manifest the steps run for; None in a state written before it was kept
    rollout_digest: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return {"version": d["version"], "stable": d["stable"], "manifestDigest": d["manifest_digest"],
                "steps": d["steps"], "currentStepIndex": self.index, "stepStartedAt": self.started_at,
                "weight": self.weight, "mirror": self.mirror, "interleave": self.interleave,
                "aborted": self.aborted, "promoted": self.promoted, "message": self.message,
                "analysis": self.analysis, "lookedAt": self.looked_at, "lastCommand": self.last_command,
                "consumedCommand": self.consumed, "confirm": self.confirm, "awaitingConfirmation": self.pending,
                "confirmation": self.confirmation, "rolloutDigest": self.rollout_digest}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        return cls(version=d["version"], stable=d.get("stable"), manifest_digest=d.get("manifestDigest", ""),
                   steps=tuple(d.get("steps") or ()), index=int(d.get("currentStepIndex", 0)),
                   started_at=float(d.get("stepStartedAt", 0.0)), weight=float(d.get("weight", 0.0)),
                   mirror=float(d.get("mirror", 0.0)), interleave=float(d.get("interleave", 0.0)),
                   aborted=bool(d.get("aborted")), promoted=bool(d.get("promoted")),
                   message=d.get("message", ""), analysis=d.get("analysis"), looked_at=d.get("lookedAt"),
                   last_command=d.get("lastCommand"), consumed=d.get("consumedCommand"), confirm=d.get("confirm"),
                   pending=d.get("awaitingConfirmation"), confirmation=d.get("confirmation"),
                   rollout_digest=d.get("rolloutDigest"))

    @property
    def current(self) -> dict[str, Any] | None:
        return self.steps[self.index] if 0 <= self.index < len(self.steps) else None


@dataclass(frozen=True)
class Transition:
    """One step transition: journaled, and announced to webhooks."""

    reason: str
    message: str
    state: RolloutState
    promote: bool = False  # the alias switches to the candidate


@dataclass(frozen=True)
class Decision:
    state: RolloutState
    transitions: tuple[Transition, ...] = ()
    waiting_for: str = ""
    next_due: float | None = None  # when the engine should call again (pause end, next look); None: on events
    changed: bool = False  # state differs from the input (a transition, or a new analysis look)


@dataclass(frozen=True)
class Verdict:
    """What the engine measured for the current analysis/interleave step (engine/online's OnlineVerdict)."""

    status: Literal["passed", "failed", "inconclusive"]
    message: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Confirmation:
    """The confirm receiver's answer to the gate the rollout waits behind (the engine asks it)."""

    ok: bool
    answer: str  # what it said, for status and the journal: "HTTP 200", "HTTP 503", "unreachable: ..."


def begin(version: str, stable: str | None, digest: str, steps: tuple[dict[str, Any], ...], now: float, *,
          reason: str = STEP_STARTED, why: str = "", confirm: dict[str, Any] | None = None,
          rollout_digest: str | None = None, consumed: str | None = None) -> Decision:
    """A fresh rollout of `version`: step 0 is entered at `now` (or waits behind its confirm gate).

    `consumed` is the previous state's last applied annotation value: the annotation stays on the
    object, and without it the new rollout would apply that value a second time."""
    state = RolloutState(version=version, stable=stable, manifest_digest=digest, steps=tuple(steps),
                         index=0, started_at=now, confirm=confirm, rollout_digest=rollout_digest, consumed=consumed)
    return _run(state, now, [], first=(reason, why))


def rollout_fingerprint(parts: Mapping[str, Any]) -> str:
    """A short digest of the manifest parts that define a rollout (the caller chooses them).

    Separate from the manifest digest, which covers the whole spec: a change that does not define
    the rollout (spec.onDelete, history, reembed) must not restart running steps."""
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def same_rollout(state: RolloutState, manifest_digest: str, rollout_digest: str) -> bool:
    """Whether `state` still runs for this manifest, or a change restarts its steps.

    A state written before rolloutDigest was kept has only the manifest digest; it is compared as
    before, so an upgrade restarts no rollout in flight."""
    if state.rollout_digest is None:
        return state.manifest_digest == manifest_digest
    return state.rollout_digest == rollout_digest


def due_input(state: RolloutState, now: float) -> str | None:
    """'analysis', 'interleave' or 'confirm' when the engine should measure before `advance`; else None."""
    if state.aborted or state.promoted:
        return None
    if state.pending:
        return "confirm" if state.looked_at is None or now >= state.looked_at + CONFIRM_INTERVAL_S else None
    step = state.current
    if step is None:
        return None
    kind = step_kind(step)
    if kind not in ("analysis", "interleave"):
        return None
    return kind if now >= _next_look(state, step[kind]) or _timed_out(state, step[kind], now) else None


def advance(state: RolloutState, now: float, *, command: str | None = None, verdict: Verdict | None = None,
            confirmed: Confirmation | None = None) -> Decision:
    """Apply an operator command, a fresh verdict or the confirm receiver's answer, then run every step
    that is due. `confirmed` answers the gate the state waits behind; it is ignored when there is none."""
    if command is not None and command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    transitions: list[Transition] = []
    original = state
    if command is not None:
        state = replace(state, last_command=command)
    if command == "retry":
        if not state.aborted:
            return _hold(state, now, transitions, original)
        state = replace(state, index=0, started_at=now, aborted=False, analysis=None, looked_at=None,
                        weight=0.0, mirror=0.0, interleave=0.0, pending=None, confirmation=None)
        return _run(state, now, transitions, first=(ROLLOUT_RETRIED, "retried: the steps start again from the "
                                                                     "first"), original=original)
    if state.aborted or state.promoted:
        return _hold(state, now, transitions, original)
    if command == "abort":
        transitions.append(_abort(state, now, ROLLOUT_ABORTED, "aborted by the operator"))
        return _hold(transitions[-1].state, now, transitions, original)
    if command == "promote-full":
        state = replace(state, index=len(state.steps), started_at=now, interleave=0.0, analysis=None,
                        looked_at=None, pending=None, confirmation=None)
        return _run(state, now, transitions, first=(PROMOTED_FULL, "promoted with --full: the remaining steps "
                                                                   "are skipped"), skip_gates=True,
                    original=original)
    answer = confirmed if state.pending else None  # an answer opens only the gate it was asked for
    if command == "promote":
        step = state.current
        if step is not None and not state.pending:
            skipped = describe(step)
            state = replace(state, interleave=0.0 if step_kind(step) == "interleave" else state.interleave,
                            index=state.index + 1)
            return _run(state, now, transitions, first=(STEP_SKIPPED, f"step {original.index + 1} ({skipped}) "
                                                                      "promoted by the operator"),
                        original=original)
        answer = Confirmation(True, "`controller promote`")  # a confirm gate (or the promotion) by hand
    if verdict is not None and state.current is not None and not state.pending:
        state = replace(state, analysis={"status": verdict.status, "message": verdict.message, **verdict.details},
                        looked_at=now)
    elif answer is not None and state.pending:
        state, withheld = _answered(state, answer, now)
        if withheld is not None:
            transitions.append(withheld)
    return _run(state, now, transitions, answer=answer, original=original)


def _answered(state: RolloutState, answer: Confirmation, now: float) -> tuple[RolloutState, Transition | None]:
    """Record the receiver's answer; a no that differs from the last one at this gate is a journal record."""
    before = (state.confirmation or {}).get("answer")
    state = replace(state, looked_at=now, confirmation={"ok": answer.ok, "answer": answer.answer, "askedAt": now})
    if answer.ok or before == answer.answer:
        return state, None
    message = (f"confirmation to {_gate_target(state)} withheld: the confirm receiver {_confirm_url(state)} "
               f"answered {answer.answer} (asked again every {CONFIRM_INTERVAL_S:g}s; `controller promote` "
               "confirms by hand)")
    state = replace(state, message=message)
    return state, Transition(CONFIRMATION_WITHHELD, message, state)


def gate_for(state: RolloutState, index: int) -> str | None:
    """The confirm gate entering step `index` (len(steps): the promotion) waits behind, or None."""
    before = (state.confirm or {}).get("before") or ()
    if index >= len(state.steps):
        return "promotion" if "promotion" in before else None
    if "step" in before:
        return "step"
    if index == 0 and "rollout" in before:
        return "rollout"
    if "trafficIncrease" in before and _raises_traffic(state, state.steps[index]):
        return "trafficIncrease"
    return None


def _raises_traffic(state: RolloutState, step: dict[str, Any]) -> bool:
    """Whether the step shows the candidate's results to more users (a mirror shows them to nobody)."""
    kind = step_kind(step)
    if kind == "setWeight":
        return float(step[kind]) > state.weight
    if kind == "interleave":
        return float(step[kind]["percentage"]) > state.interleave
    return False


def _confirm_url(state: RolloutState) -> str:
    return str((state.confirm or {}).get("url") or "?")


def _gate_target(state: RolloutState) -> str:
    step = state.current
    if step is None:
        return f"promote {state.version}"
    return f"start step {state.index + 1}/{len(state.steps)} {describe(step)}"


def _enter(state: RolloutState, index: int, now: float, *, gated: bool = True) -> RolloutState:
    """Step `index` begins now; its effect (weight, mirror, interleave share) applies at once, unless a
    confirm gate stands before it: then the step waits (`pending`), nothing of it applied yet.

    The last verdict stays in the state (status and the journal show the numbers behind the step
    just passed) but no longer counts: only a look taken in this step (looked_at) decides it."""
    state = replace(state, index=index, started_at=now, looked_at=None, pending=None, confirmation=None)
    step = state.current
    if step is None:
        return state
    gate = gate_for(state, index) if gated else None
    if gate is not None:
        return replace(state, pending=gate)
    kind = step_kind(step)
    if kind == "setWeight":
        return replace(state, weight=float(step[kind]))
    if kind == "setMirror":
        return replace(state, mirror=float(step[kind]))
    if kind == "interleave":
        return replace(state, interleave=float(step[kind]["percentage"]))
    return state


def _run(state: RolloutState, now: float, transitions: list[Transition], *, first: tuple[str, str] | None = None,
         answer: Confirmation | None = None, skip_gates: bool = False, original: RolloutState | None = None
         ) -> Decision:
    """Enter the current step (when `first` says it is new) and every following step that completes now.

    `answer` opens the first confirm gate met (it was asked for that one); `skip_gates` (promote --full)
    passes every gate."""
    if first is not None:
        state = _enter(state, state.index, now, gated=not skip_gates)
        transitions.append(_transition(state, first[0], first[1]))
    for _ in range(2 * len(state.steps) + 3):
        if state.pending:
            if answer is None or not answer.ok:
                return _hold(state, now, transitions, original)
            who, answer = answer.answer, None  # one answer opens one gate
            if state.current is not None:
                state = _enter(state, state.index, now, gated=False)
                transitions.append(_transition(state, STEP_CONFIRMED, f"confirmed ({who})"))
                continue
            return _promote(state, now, transitions, original, f", confirmed ({who})")
        step = state.current
        if step is None:
            gate = None if skip_gates else gate_for(state, state.index)
            if gate is None:
                return _promote(state, now, transitions, original, "")
            state = replace(state, pending=gate, started_at=now, looked_at=None, confirmation=None)
            transitions.append(_transition(state, AWAITING_CONFIRMATION,
                                           f"all {len(state.steps)} steps done"))
            continue
        kind = step_kind(step)
        body = step[kind]
        outcome = _outcome(state, kind, body, now)
        if outcome is None:
            return _hold(state, now, transitions, original)
        reason, message = outcome
        if reason in (ANALYSIS_FAILED, ANALYSIS_TIMED_OUT):
            transitions.append(_abort(state, now, reason, message))
            return _hold(transitions[-1].state, now, transitions, original)
        ending = replace(state, interleave=0.0) if kind == "interleave" else state
        state = _enter(ending, state.index + 1, now, gated=not skip_gates)
        transitions.append(_transition(state, AWAITING_CONFIRMATION if state.pending else STEP_STARTED, message))
    raise AssertionError("the step machine did not settle")  # every pass moves the index or opens a gate


def _promote(state: RolloutState, now: float, transitions: list[Transition], original: RolloutState | None,
             confirmed: str) -> Decision:
    weights = replace(state, weight=100.0, mirror=0.0, interleave=0.0, promoted=True, pending=None,
                      message=f"all {len(state.steps)} steps done{confirmed}: {state.version} is promoted")
    transitions.append(Transition(STEPS_COMPLETE, weights.message, weights, promote=True))
    return _hold(weights, now, transitions, original)


def _outcome(state: RolloutState, kind: str, body: Any, now: float) -> tuple[str, str] | None:
    """(reason, message) when the current step is finished now; None while it holds."""
    n = f"step {state.index + 1}/{len(state.steps)}"
    if kind in ("setWeight", "setMirror"):
        return STEP_STARTED, f"{n} {describe(state.steps[state.index])} done"
    if kind == "pause":
        duration = _seconds((body or {}).get("duration"), None)
        if duration is not None and now >= state.started_at + duration:
            return STEP_STARTED, f"{n} pause of {body['duration']} is over"
        return None
    looked = state.looked_at is not None  # a verdict of this step, not of the one before
    status = (state.analysis or {}).get("status") if looked else None
    detail = ((state.analysis or {}).get("message") or "") if looked else ""
    what = "interleaving preference test" if kind == "interleave" else "online analysis"
    if status == "passed":
        return STEP_STARTED, f"{n} {what} passed: {detail}".rstrip(": ")
    if status == "failed":
        return ANALYSIS_FAILED, f"{n} {what} failed: {detail}".rstrip(": ")
    if _timed_out(state, body, now):
        return ANALYSIS_TIMED_OUT, (f"{n} {what} still inconclusive after maxDuration {body['maxDuration']}"
                                    + (f": {detail}" if detail else " (no verdict yet)"))
    return None


def _next_look(state: RolloutState, body: dict[str, Any]) -> float:
    interval = _seconds(body.get("interval"), DEFAULT_INTERVAL_S) or DEFAULT_INTERVAL_S
    return (state.looked_at if state.looked_at is not None else state.started_at) + interval


def _timed_out(state: RolloutState, body: dict[str, Any], now: float) -> bool:
    limit = _seconds(body.get("maxDuration"), None)
    return limit is not None and now >= state.started_at + limit


def _abort(state: RolloutState, now: float, reason: str, message: str) -> Transition:
    aborted = replace(state, weight=0.0, mirror=0.0, interleave=0.0, aborted=True,
                      message=f"{message}; weight back to 0%: `controller retry` or a manifest change starts again")
    return Transition(reason, aborted.message, aborted)


def _transition(state: RolloutState, reason: str, why: str) -> Transition:
    step = state.current
    now_at = (f"step {state.index + 1}/{len(state.steps)} {describe(step)}" if step is not None
              else "all steps done")
    if state.pending:
        now_at = (f"waiting for confirmation from {_confirm_url(state)} to {_gate_target(state)} "
                  f"(confirm before {state.pending})")
    else:
        now_at = f"at {now_at}"
    message = f"{why}; now {now_at}" if why else f"now {now_at}"
    state = replace(state, message=message)
    return Transition(reason, message, state)


def _hold(state: RolloutState, now: float, transitions: list[Transition], original: RolloutState | None
          ) -> Decision:
    if transitions:
        state = replace(state, message=transitions[-1].state.message)
    waiting, due = _waiting(state, now)
    return Decision(state, tuple(transitions), waiting, due, changed=original is None or state != original)


def _waiting(state: RolloutState, now: float) -> tuple[str, float | None]:
    """What the rollout waits for, in words, and when the machine is next due."""
    if state.aborted:
        return f"aborted ({state.message}); `controller retry` starts again", None
    if state.promoted:
        return "", None
    if state.pending:
        last = (state.confirmation or {}).get("answer")
        due = state.started_at if state.looked_at is None else state.looked_at + CONFIRM_INTERVAL_S
        return (f"confirmation from {_confirm_url(state)} (the confirm webhook answering 200) to "
                f"{_gate_target(state)}" + (f"; last answer: {last}" if last else "")
                + "; `controller promote` confirms by hand", due)
    step = state.current
    if step is None:
        return "", None
    kind = step_kind(step)
    body = step[kind]
    if kind == "pause":
        duration = _seconds((body or {}).get("duration"), None)
        if duration is None:
            return "`controller promote` (pause without duration)", None
        return f"the pause of {body['duration']} to end", state.started_at + duration
    if kind in ("analysis", "interleave"):
        due = _next_look(state, body)
        limit = _seconds(body.get("maxDuration"), None)
        if limit is not None:
            due = min(due, state.started_at + limit)
        last = (state.analysis or {}).get("message") if state.looked_at is not None else None
        what = "interleaving preference test" if kind == "interleave" else "online gates"
        return f"the {what} to decide" + (f" (last look: {last})" if last else ""), due
    return "", None


def routing_of(state: RolloutState) -> tuple[str | None, float, float, float]:
    """(candidate, weight, mirror, interleave) the routing record should hold for this state."""
    if state.aborted:
        return None, 0.0, 0.0, 0.0
    return state.version, state.weight, state.mirror, state.interleave


def summary(state: RolloutState, waiting_for: str, next_due: float | None) -> dict[str, Any]:
    """The step part of a plan and of status: where the rollout is, what it waits for, when it is due."""
    step = state.current
    return {"version": state.version, "currentStepIndex": state.index, "steps": len(state.steps),
            "step": describe(step) if step is not None else ("promoted" if state.promoted else "promotion"),
            "stepStartedAt": state.started_at, "waitingFor": waiting_for, "nextDueAt": next_due,
            "weight": state.weight, "mirror": state.mirror, "interleave": state.interleave,
            "aborted": state.aborted, "promoted": state.promoted, "message": state.message,
            "analysis": state.analysis,
            **({"awaitingConfirmation": state.pending, "confirmation": state.confirmation} if state.confirm else {})}


def summary_now(state: RolloutState, now: float) -> dict[str, Any]:
    waiting, due = _waiting(state, now)
    return summary(state, waiting, due)
