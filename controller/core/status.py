"""Status: computed in one place from routing, versions, the plan and the last checks.

Pure. Conditions follow Kubernetes/Flux conventions (Ready, Progressing,
Degraded, Stalled) and keep their lastTransitionTime while their status does
not change, so an unchanged world produces a byte-identical status.
"""

from __future__ import annotations

from typing import Any

from controller.core import reasons as R
from controller.core.stale import stale_condition
from controller.core.types import Condition, Plan, Routing, VersionInfo

def compute_status(*, name: str, alias: str, routing: Routing, versions: list[VersionInfo],
                   plan: Plan, verdicts: dict[str, dict[str, Any]], manifest_digest: str,
                   previous: dict[str, Any] | None, now: str, error: str | None = None,
                   extra: dict[str, Any] | None = None,
                   corpus_drift: dict[str, Any] | None = None) -> dict[str, Any]:
    """``corpus_drift`` is the target's build-time corpus drift record (meta.json ``corpusDrift``);
    when present the status carries it and an IndexStale condition."""
    by_id = {v.id: v for v in versions}
    target = by_id.get(plan.target) if plan.target else None
    phase, reason, message = _phase(routing, target, plan, error)
    checked = _last_checked(plan.target, routing, verdicts)
    report = verdicts.get(checked, {}).get("report", {}) if checked else {}
    status = {
        "name": name,
        "alias": alias,
        "phase": phase,
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
        "conditions": _conditions(phase, reason, message, previous, now,
                                  stale_condition((corpus_drift or {}).get("assessment"))),
    }
    if corpus_drift:
        status["corpusDrift"] = corpus_drift
    if extra:
        status.update(extra)
    return status


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


def _phase(routing: Routing, target: VersionInfo | None, plan: Plan,
           error: str | None) -> tuple[str, str, str]:
    if error:
        return "Stalled", R.RECONCILE_ERROR, error
    if plan.blocked:
        return "Stalled", plan.blocked, plan.message
    if plan.message.startswith("suspended"):
        return "Suspended", R.SUSPENDED, plan.message
    if plan.changes:
        return "Pending", R.CHECKS_PENDING, "changes pending: " + "; ".join(a.message for a in plan.actions)
    if target is not None and target.id in routing.held:
        return "Paused", R.HELD, plan.message
    if target is not None and target.verdict == "failed":
        return "RolledBack", R.GATE_FAILED, f"{target.id} rolled back: {target.verdict_message}"
    if target is not None and routing.candidate == target.id:
        return "Progressing", R.WEIGHT_CHANGED, (
            f"{target.id} serves {routing.weight:g}% as candidate; {routing.stable} serves the rest")
    return "Healthy", R.UP_TO_DATE, plan.message or f"{routing.stable} is stable"


def _conditions(phase: str, reason: str, message: str, previous: dict[str, Any] | None,
                now: str, stale: Condition | None = None) -> list[dict[str, Any]]:
    wanted = [
        Condition("Ready", "True" if phase == "Healthy" else "False", reason, message),
        Condition("Progressing", "True" if phase in ("Progressing", "Pending") else "False", reason, message),
        Condition("Degraded", "True" if phase == "RolledBack" else "False", reason, message),
        Condition("Stalled", "True" if phase == "Stalled" else "False", reason, message),
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
