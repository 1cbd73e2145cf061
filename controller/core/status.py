"""Status: computed in one place from routing, versions, the plan and the last checks.

Pure. engine/status.py is its only caller: every exit path (a reconcile, a
failed reconcile, a manual rollback, suspend, resume, the operator) goes
through it. Conditions follow Kubernetes/Flux conventions (Ready, Progressing,
Degraded, Stalled), are derived from the phase alone, so they never contradict
it, and keep their lastTransitionTime while their status does not change, so
an unchanged world produces a byte-identical status.
"""

from __future__ import annotations

from typing import Any

from controller.core import reasons as R
from controller.core.stale import stale_condition
from controller.core.types import CheckReport, Condition, Phase, Plan, Routing, VersionInfo


def compute_status(*, name: str, alias: str, routing: Routing, versions: list[VersionInfo],
                   plan: Plan, verdicts: dict[str, dict[str, Any]], manifest_digest: str,
                   previous: dict[str, Any] | None, now: str, error: str | None = None,
                   extra: dict[str, Any] | None = None,
                   corpus_drift: dict[str, Any] | None = None,
                   last_cycle: dict[str, Any] | None = None, suspended: str | None = None,
                   manual: str | None = None, resumed: str | None = None) -> dict[str, Any]:
    """``corpus_drift`` is the target's build-time corpus drift record (meta.json ``corpusDrift``);
    when present the status carries it and an IndexStale condition.

    ``last_cycle`` summarises the reconcile that just ran (see `summarize_cycle`); paths that are no
    reconcile (a manual rollback, suspend, resume) keep the previous one. ``suspended``,
    ``manual`` and ``resumed`` are the messages of states no plan shows: the store's suspend flag,
    a manual rollback that holds a version, a resume waiting for its next pass.
    """
    by_id = {v.id: v for v in versions}
    target = by_id.get(plan.target) if plan.target else None
    phase, reason, message = _phase(routing, target, plan, error, suspended=suspended, manual=manual,
                                    resumed=resumed)
    checked = _last_checked(plan.target, routing, verdicts)
    report = verdicts.get(checked, {}).get("report", {}) if checked else {}
    status = {
        "name": name,
        "alias": alias,
        "phase": phase.value,
        "message": message,
        "stable": version_ref(by_id.get(routing.stable)) if routing.stable else None,
        "candidate": version_ref(by_id.get(routing.candidate)) if routing.candidate else None,
        "weight": routing.weight,
        "target": plan.target,
        "held": list(routing.held),
        "gates": [{k: g[k] for k in ("metric", "kind", "value", "threshold", "passed", "message", "baseline", "ci")}
                  for g in report.get("gates", [])],
        "checkedVersion": checked,
        "metrics": report.get("metrics", {}),
        "baselineMetrics": report.get("baselineMetrics", {}),
        "drift": report.get("drift", []),
        "regressed": report.get("regressed", []),
        "goldenDigest": report.get("goldenDigest"),
        "versions": [v.id for v in versions],
        "observedManifestDigest": manifest_digest,
        "lastCycle": last_cycle or (previous or {}).get("lastCycle") or summarize_cycle([]),
        "conditions": _conditions(phase, reason, message, previous, now,
                                  stale_condition((corpus_drift or {}).get("assessment"))),
    }
    if plan.rollout is not None:  # stepped rollout: current step, what it waits for, analysis numbers
        status["rollout"] = plan.rollout
    if corpus_drift:
        status["corpusDrift"] = corpus_drift
    if extra:
        status.update(extra)
    return status


def summarize_cycle(reports: list[CheckReport]) -> dict[str, Any]:
    """What CI needs from one reconcile: did a candidate fail its gates and get rolled back, and which gates.

    `rolledBack` is about gate failures in this cycle only; a rollback asked for by the manifest
    (a Git revert) is a plan, not a failure. The phase keeps telling the lasting state.
    """
    failed = [r for r in reports if not r.passed]
    return {
        "rolledBack": bool(failed),
        "rolledBackVersions": [r.version for r in failed],
        "failedGates": [{"version": r.version, "metric": g.metric, "kind": g.kind, "value": g.value,
                         "threshold": g.threshold, "message": g.message}
                        for r in failed for g in r.failures()],
    }


def version_ref(version: VersionInfo | None) -> dict[str, Any] | None:
    if version is None:
        return None
    return {"version": version.id, "label": version.label, "fingerprint": version.fingerprint,
            "factory": version.factory, "metric": version.metric, "documents": version.documents}


def _last_checked(target: str | None, routing: Routing, verdicts: dict[str, dict[str, Any]]) -> str | None:
    for candidate in (target, routing.candidate, routing.stable):
        if candidate and candidate in verdicts:
            return candidate
    return None


def _phase(routing: Routing, target: VersionInfo | None, plan: Plan, error: str | None, *,
           suspended: str | None = None, manual: str | None = None,
           resumed: str | None = None) -> tuple[Phase, str, str]:
    if error:
        return Phase.STALLED, R.RECONCILE_ERROR, error
    if plan.blocked:
        return Phase.STALLED, plan.blocked, plan.message
    if suspended:
        return Phase.SUSPENDED, R.SUSPENDED, suspended
    if plan.message.startswith("suspended"):
        return Phase.SUSPENDED, R.SUSPENDED, plan.message
    if resumed:
        return Phase.PENDING, R.RESUMED, resumed
    if plan.changes:
        return Phase.PENDING, R.CHECKS_PENDING, "changes pending: " + "; ".join(a.message for a in plan.actions)
    # a manual rollback pauses the index when it holds what the manifest asks for (as the next plan will)
    if target is not None and target.id in routing.held:
        return (Phase.PAUSED, R.MANUAL_ROLLBACK, manual) if manual else (Phase.PAUSED, R.HELD, plan.message)
    # ... and when it moved the alias off what the manifest asks for, even a target that had failed:
    # the last thing that happened is the person's move, not the old rollback
    if manual and routing.held and (target is None or target.id != routing.stable):
        return Phase.PAUSED, R.MANUAL_ROLLBACK, manual
    if target is not None and target.verdict == "failed":
        return Phase.ROLLED_BACK, R.GATE_FAILED, f"{target.id} rolled back: {target.verdict_message}"
    step = plan.rollout or {}
    if target is not None and step.get("aborted") and step.get("version") == target.id:
        return Phase.ROLLED_BACK, R.ROLLOUT_ABORTED, f"rollout of {target.id} aborted: {step.get('message')}"
    if target is not None and routing.candidate == target.id and step.get("version") == target.id:
        return Phase.PROGRESSING, R.WEIGHT_CHANGED, (
            f"{target.id} at step {step['currentStepIndex'] + 1}/{step['steps']} ({step['step']}): "
            f"{routing.weight:g}% of queries, mirror {routing.mirror:g}%, interleave {routing.interleave:g}%; "
            f"waiting for {step.get('waitingFor') or 'nothing'}")
    if target is not None and routing.candidate == target.id:
        return Phase.PROGRESSING, R.WEIGHT_CHANGED, (
            f"{target.id} serves {routing.weight:g}% as candidate; {routing.stable} serves the rest")
    if manual:  # a manual move that holds nothing, e.g. `rollback --to` the version the manifest names
        return Phase.HEALTHY, R.MANUAL_ROLLBACK, manual
    return Phase.HEALTHY, R.UP_TO_DATE, plan.message or f"{routing.stable} is stable"


#: Every condition type a status can carry (IndexStale only where corpus drift was measured).
CONDITION_TYPES = ("Ready", "Progressing", "Degraded", "Stalled", "IndexStale")


def _conditions(phase: Phase, reason: str, message: str, previous: dict[str, Any] | None,
                now: str, stale: Condition | None = None) -> list[dict[str, Any]]:
    """Each condition's status is a function of the phase; all carry the phase's reason and message."""
    def flag(*phases: Phase) -> str:
        return "True" if phase in phases else "False"

    wanted = [
        Condition("Ready", flag(Phase.HEALTHY), reason, message),
        Condition("Progressing", flag(Phase.PROGRESSING, Phase.PENDING), reason, message),
        Condition("Degraded", flag(Phase.ROLLED_BACK), reason, message),
        Condition("Stalled", flag(Phase.STALLED), reason, message),
    ]
    if stale is not None:  # only indexes whose corpus drift was measured carry IndexStale
        wanted.append(stale)
    before = {c["type"]: c for c in (previous or {}).get("conditions", [])}
    out = []
    for cond in wanted:
        old = before.get(cond.type)
        same = old is not None and old.get("status") == cond.status
        cond.last_transition_time = old["lastTransitionTime"] if same else now
        out.append(cond.to_dict())
    return out
