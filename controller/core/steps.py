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
- after the last step: promotion (the alias switches to the candidate), held first by the confirm
  webhook when one is configured.
- abort: weight, mirror and interleave go to 0 and the rollout stays aborted until retry (or a
  manifest change, which restarts the steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from controller.durations import parse_duration

Command = Literal["promote", "promote-full", "abort", "retry"]
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

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["steps"] = list(self.steps)
        return {"version": d["version"], "stable": d["stable"], "manifestDigest": d["manifest_digest"],
                "steps": d["steps"], "currentStepIndex": self.index, "stepStartedAt": self.started_at,
                "weight": self.weight, "mirror": self.mirror, "interleave": self.interleave,
                "aborted": self.aborted, "promoted": self.promoted, "message": self.message,
                "analysis": self.analysis, "lookedAt": self.looked_at, "lastCommand": self.last_command,
                "consumedCommand": self.consumed}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RolloutState:
        return cls(version=d["version"], stable=d.get("stable"), manifest_digest=d.get("manifestDigest", ""),
                   steps=tuple(d.get("steps") or ()), index=int(d.get("currentStepIndex", 0)),
                   started_at=float(d.get("stepStartedAt", 0.0)), weight=float(d.get("weight", 0.0)),
                   mirror=float(d.get("mirror", 0.0)), interleave=float(d.get("interleave", 0.0)),
                   aborted=bool(d.get("aborted")), promoted=bool(d.get("promoted")),
                   message=d.get("message", ""), analysis=d.get("analysis"), looked_at=d.get("lookedAt"),
                   last_command=d.get("lastCommand"), consumed=d.get("consumedCommand"))

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


def begin(version: str, stable: str | None, digest: str, steps: tuple[dict[str, Any], ...], now: float, *,
          reason: str = STEP_STARTED, why: str = "", confirm: bool = False) -> Decision:
    """A fresh rollout of `version`: step 0 is entered at `now`."""
    state = RolloutState(version=version, stable=stable, manifest_digest=digest, steps=tuple(steps),
                         index=0, started_at=now)
    return _run(state, now, [], first=(reason, why), confirm=confirm)


def due_input(state: RolloutState, now: float, *, confirm: bool = False) -> str | None:
    """'analysis', 'interleave' or 'confirm' when the engine should measure before `advance`; else None."""
    if state.aborted or state.promoted:
        return None
    step = state.current
    if step is None:
        if not confirm:
            return None
        return "confirm" if state.looked_at is None or now >= state.looked_at + CONFIRM_INTERVAL_S else None
    kind = step_kind(step)
    if kind not in ("analysis", "interleave"):
        return None
    return kind if now >= _next_look(state, step[kind]) or _timed_out(state, step[kind], now) else None


def advance(state: RolloutState, now: float, *, command: str | None = None, verdict: Verdict | None = None,
            confirm: bool = False, confirmed: bool | None = None) -> Decision:
    """Apply an operator command and a fresh verdict, then run every step that is due."""
    if command is not None and command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    transitions: list[Transition] = []
    original = state
    if command is not None:
        state = replace(state, last_command=command)
    if command == "retry":
        if not state.aborted:
            return _hold(state, now, transitions, original, confirm)
        state = replace(state, index=0, started_at=now, aborted=False, analysis=None, looked_at=None,
                        weight=0.0, mirror=0.0, interleave=0.0)
        return _run(state, now, transitions, first=(ROLLOUT_RETRIED, "retried: the steps start again from the "
                                                                     "first"), confirm=confirm, original=original)
    if state.aborted or state.promoted:
        return _hold(state, now, transitions, original, confirm)
    if command == "abort":
        transitions.append(_abort(state, now, ROLLOUT_ABORTED, "aborted by the operator"))
        return _hold(transitions[-1].state, now, transitions, original, confirm)
    if command == "promote-full":
        state = replace(state, index=len(state.steps), started_at=now, interleave=0.0, analysis=None,
                        looked_at=None)
        return _run(state, now, transitions, first=(PROMOTED_FULL, "promoted with --full: the remaining steps "
                                                                   "are skipped"), confirm=False,
                    original=original)
    if command == "promote":
        step = state.current
        if step is not None:
            skipped = describe(step)
            state = _enter(replace(state, interleave=0.0 if step_kind(step) == "interleave" else state.interleave),
                           state.index + 1, now)
            return _run(state, now, transitions, first=(STEP_SKIPPED, f"step {original.index + 1} ({skipped}) "
                                                                      "promoted by the operator"),
                        confirm=confirm, original=original)
        confirmed = True  # promote at the end answers the confirm gate by hand
    if verdict is not None and state.current is not None:
        state = replace(state, analysis={"status": verdict.status, "message": verdict.message, **verdict.details},
                        looked_at=now)
    elif confirmed is not None and state.current is None:
        state = replace(state, looked_at=now)
    return _run(state, now, transitions, confirm=confirm, confirmed=confirmed, original=original)


def _enter(state: RolloutState, index: int, now: float) -> RolloutState:
    """Step `index` begins now; its effect (weight, mirror, interleave share) applies at once.

    The last verdict stays in the state (status and the journal show the numbers behind the step
    just passed) but no longer counts: only a look taken in this step (looked_at) decides it."""
    state = replace(state, index=index, started_at=now, looked_at=None)
    step = state.current
    if step is None:
        return state
    kind = step_kind(step)
    if kind == "setWeight":
        return replace(state, weight=float(step[kind]))
    if kind == "setMirror":
        return replace(state, mirror=float(step[kind]))
    if kind == "interleave":
        return replace(state, interleave=float(step[kind]["percentage"]))
    return state


def _run(state: RolloutState, now: float, transitions: list[Transition], *, first: tuple[str, str] | None = None,
         confirm: bool = False, confirmed: bool | None = None, original: RolloutState | None = None) -> Decision:
    """Enter the current step (when `first` says it is new) and every following step that completes now."""
    if first is not None:
        state = _enter(state, state.index, now)
        transitions.append(_transition(state, first[0], first[1]))
    for _ in range(len(state.steps) + 1):
        step = state.current
        if step is None:
            if confirm and confirmed is not True:
                return _hold(state, now, transitions, original, confirm)
            weights = replace(state, weight=100.0, mirror=0.0, interleave=0.0, promoted=True,
                              message=f"all {len(state.steps)} steps done: {state.version} is promoted")
            transitions.append(Transition(STEPS_COMPLETE, weights.message, weights, promote=True))
            return _hold(weights, now, transitions, original, confirm)
        kind = step_kind(step)
        body = step[kind]
        outcome = _outcome(state, kind, body, now)
        if outcome is None:
            return _hold(state, now, transitions, original, confirm)
        reason, message = outcome
        if reason in (ANALYSIS_FAILED, ANALYSIS_TIMED_OUT):
            transitions.append(_abort(state, now, reason, message))
            return _hold(transitions[-1].state, now, transitions, original, confirm)
        ending = replace(state, interleave=0.0) if kind == "interleave" else state
        state = _enter(ending, state.index + 1, now)
        transitions.append(_transition(state, STEP_STARTED, message))
    raise AssertionError("the step machine did not settle")  # every pass moves the index forward


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
    message = f"{why}; now at {now_at}" if why else f"now at {now_at}"
    state = replace(state, message=message)
    return Transition(reason, message, state)


def _hold(state: RolloutState, now: float, transitions: list[Transition], original: RolloutState | None,
          confirm: bool) -> Decision:
    if transitions:
        state = replace(state, message=transitions[-1].state.message)
    waiting, due = _waiting(state, now, confirm)
    return Decision(state, tuple(transitions), waiting, due, changed=original is None or state != original)


def _waiting(state: RolloutState, now: float, confirm: bool) -> tuple[str, float | None]:
    """What the rollout waits for, in words, and when the machine is next due."""
    if state.aborted:
        return f"aborted ({state.message}); `controller retry` starts again", None
    if state.promoted:
        return "", None
    step = state.current
    if step is None:
        if confirm:
            return ("the confirm webhook to answer 200 (or `controller promote`)",
                    (state.looked_at or now) + CONFIRM_INTERVAL_S)
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
            "analysis": state.analysis}


def summary_now(state: RolloutState, now: float, *, confirm: bool = False) -> dict[str, Any]:
    waiting, due = _waiting(state, now, confirm)
    return summary(state, waiting, due)
