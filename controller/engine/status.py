"""Status in one place: the only code that computes and writes an index's status.

Every exit path calls `persist_status`: a reconcile that finished, one that
failed (Stalled, with the error), a manual rollback (Paused, with its message),
`controller suspend` / `resume`, and the operator, whose CR status is this same
dict plus observedGeneration. The decision itself is the pure
core.status.compute_status; this module gathers its inputs from the store
(routing, versions, verdicts, the suspend flag, the previous status) so no
caller can forget one, and writes the result (skipped when unchanged).
"""

from __future__ import annotations

import time
from typing import Any

from controller.core.status import compute_status, summarize_cycle
from controller.core.steps import RolloutState, summary_now
from controller.core.types import CheckReport, Phase, Plan
from controller.errors import NotFound
from controller.stamps import utc_stamp
from controller.store.fs import Store
from controller.store.flags import SUSPEND_FILE, suspension

__all__ = ["Phase", "SUSPEND_FILE", "corpus_drift_of", "persist_status", "suspension", "utc_now"]


utc_now = utc_stamp


def suspended_message(name: str, record: dict[str, Any]) -> str:
    why = f" ({record['reason']})" if record.get("reason") else ""
    return (f"suspended since {record.get('since')}{why}: sync and watch leave {name} alone; "
            f"`controller resume {name}` releases it")


def corpus_drift_of(store: Store, name: str, target: str | None, stable: str | None) -> dict[str, Any] | None:
    """The build-time corpus drift record of the target version (else the stable one), if any."""
    for version in (target, stable):
        if not version:
            continue
        try:
            record = store.meta(name, version).get("corpusDrift")
        except NotFound:
            continue
        if record:
            return {"version": version, **record}
    return None


def persist_status(store: Store, name: str, *, plan: Plan | None = None, alias: str | None = None,
                   manifest_digest: str | None = None, error: str | None = None,
                   reports: list[CheckReport] | None = None, manual: str | None = None,
                   resumed: str | None = None, previous: dict[str, Any] | None = None,
                   write: bool = True, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compute the status of `name` and write it to the store; returns it.

    `plan` is the last plan of a reconcile; paths without a manifest (manual rollback, suspend,
    resume, an operator error) pass none and the previous status's target and manifest digest
    stand, so a hold is not released by a status write. `reports` are the checks this cycle ran
    (None: not a reconcile, the previous `lastCycle` stays). `previous` overrides the stored
    status as the base for transition times (the operator passes the CR's when the store has
    none). Nothing is written when `write` is false or the index was never reconciled and the
    write would be its first trace.
    """
    stored = store.status(name)
    base = stored if stored is not None else (previous or {})
    if plan is None:
        plan = Plan(name, target=base.get("target"))
    if plan.rollout is None:  # paths without a plan (verbs, errors) still show the step state
        from dataclasses import replace

        summary = rollout_summary(store, name, plan.target)
        if summary is not None:
            plan = replace(plan, rollout=summary)
    routing = store.routing(name)
    versions = store.versions(name)
    flag = suspension(store, name)
    forced = store.routing_record(name).get("forced")
    if forced:  # a `rollback --force` target stays visible in status while it is routed
        extra = {**(extra or {}), "forced": forced}
    status = compute_status(
        name=name, alias=alias or base.get("alias") or store.routing_record(name).get("alias") or name,
        routing=routing, versions=versions, plan=plan,
        verdicts={v.id: store.verdict(name, v.id) for v in versions if v.verdict},
        manifest_digest=manifest_digest if manifest_digest is not None else base.get("observedManifestDigest", ""),
        previous=base or None, now=utc_now(), error=error,
        corpus_drift=corpus_drift_of(store, name, plan.target, routing.stable),
        last_cycle=summarize_cycle(reports) if reports is not None else None,
        suspended=suspended_message(name, flag) if flag is not None else None,
        manual=manual, resumed=resumed, extra=extra)
    if write and (stored is not None or error is None) and store.index_dir(name).is_dir():
        store.write_status(name, status)
    return status


def rollout_summary(store: Store, name: str, target: str | None, now: float | None = None) -> dict[str, Any] | None:
    """The step summary of status (current step, waitingFor, nextDueAt, analysis), when a rollout exists."""
    try:
        state = _stored_rollout(store, name)
    except (KeyError, ValueError, TypeError):
        return None
    if state is None or (target is not None and state.version != target):
        return None
    return summary_now(state, time.time() if now is None else now)


def _stored_rollout(store: Store, name: str) -> RolloutState | None:
    raw = store.rollout(name)
    return RolloutState.from_dict(raw) if raw else None
