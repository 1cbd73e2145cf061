"""The plan: a pure function of what the manifest wants and what the store has.

plan(desired, observed) -> Plan. No I/O, no clock. Every branch names its
reason (a constant from core.reasons) and a sentence with the numbers.

The lifecycle of a version, as a level-based controller sees it:
  missing  -> build, check, then (if the gates pass) weight or promote
  built, unchecked -> check, then weight or promote
  passed   -> weight = rollout.percentage; at 100 the alias switches (promote)
  failed   -> rolled back: weight 0, the alias stays on stable; nothing more
             until the manifest changes

Serving state is a function of the manifest and the kept versions, so Git
reverts go back:
  stable asked for at P < 100%  -> it returns to a P% candidate beside its
             previous stable (RevertedToCanary), if that version is kept and
             passed its gates; otherwise the plan is blocked and says why
  an older kept version at 100% -> the alias goes back to it (Rollback)
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Mapping

from dataclasses import replace

from controller.core import reasons as R
from controller.core import refresh as F
from controller.core import steps as S
from controller.core.types import Action, Desired, Observed, Plan, VersionInfo
from controller.manifest.providers import capabilities

# journal reasons of moves back: they do not make the version moved to a fresh promotion
_BACKWARD_REASONS = frozenset({R.MANUAL_ROLLBACK, R.ROLLBACK, R.REVERTED_TO_CANARY})
_REVISION = re.compile(r"\.r\d+$")  # next_version_id's suffix for a corpus revision of a label


def plan(desired: Desired, observed: Observed, now: float = 0.0) -> Plan:
    """`now` (seconds since the epoch) times rollout steps; the plan's rollout.nextDueAt says when to plan again."""
    if desired.suspend:
        return Plan(desired.name, message="suspended: spec.suspend is true, nothing is reconciled",
                    blocked=None, target=None)
    conflict = _immutable_conflict(desired, observed)
    if conflict is not None:
        return Plan(desired.name, blocked=R.INDEX_VERSION_IMMUTABLE, message=conflict)
    target = _target(desired, observed)
    if target is None:
        version_id = next_version_id(desired.label, observed.versions)
        refreshed = _refresh_serving(desired, observed, version_id, now)
        if refreshed is not None:
            return _with_gc(refreshed, desired, observed, version_id)
        actions = [_build(desired, observed, version_id), _check(version_id, observed, desired)]
        more, rollout = _rollout(desired, observed, version_id, if_gates_pass=True, now=now)
        return _with_gc(Plan(desired.name, tuple(actions + more), target=version_id, rollout=rollout),
                        desired, observed, version_id)
    return _with_gc(_plan_existing(desired, observed, target, now), desired, observed, target.id)


def _plan_existing(desired: Desired, observed: Observed, target: VersionInfo, now: float = 0.0) -> Plan:
    routing = observed.routing
    name = desired.name
    if target.id == routing.stable:
        if desired.percentage < 100 and desired.steps is None and observed.previous_stable is not None:
            return _revert_to_candidate(desired, observed, target)
        if routing.candidate is not None:
            return Plan(name, (Action("abort", routing.candidate, R.BACK_ON_STABLE,
                                      f"the manifest asks for the stable version {target.id} again: "
                                      f"candidate {routing.candidate} is withdrawn (weight "
                                      f"{routing.weight:g}% -> 0%)"),), target=target.id)
        return Plan(name, target=target.id, message=f"up to date: {target.id} is stable and serves 100%")
    if target.id in routing.held:
        return Plan(name, target=target.id, message=(
            f"{target.id} is held after a manual rollback; run `controller rollback {name} --to "
            f"{target.id}` to release it, or change the manifest"))
    if target.verdict == "failed":
        if routing.candidate == target.id:
            return Plan(name, (Action("abort", target.id, R.GATE_FAILED,
                                      f"{target.id} failed its gates: {target.verdict_message}"),),
                        target=target.id)
        return Plan(name, target=target.id, message=(
            f"{target.id} was rolled back: {target.verdict_message}; the alias stays on "
            f"{routing.stable}. Change the manifest to try again"))
    actions: list[Action] = []
    pending_check = target.verdict is None
    if pending_check:
        actions.append(_check(target.id, observed, desired))
    more, rollout = _rollout(desired, observed, target.id, if_gates_pass=pending_check, now=now)
    actions += more
    message = "" if actions else _steady_message(target.id, observed, rollout)
    return Plan(name, tuple(actions), target=target.id, message=message, rollout=rollout)


def _revert_to_candidate(desired: Desired, observed: Observed, target: VersionInfo) -> Plan:
    """The manifest asks for the stable at less than 100%: what it asked before its promotion."""
    routing = observed.routing
    previous = observed.previous_stable
    pct = desired.percentage
    problem = _unusable_previous(observed, previous, desired.keep)
    if problem is not None:
        return Plan(desired.name, target=target.id, blocked=R.PREVIOUS_STABLE_UNAVAILABLE, message=(
            f"the manifest asks for {target.id} at {pct:g}%, which returns it to a candidate beside the "
            f"version stable before it, {previous}, but {problem}; {target.id} stays stable at 100%. "
            "Set rollout.percentage to 100, or name a kept version in spec.index.version"))
    actions = []
    if routing.candidate not in (None, previous):
        actions.append(Action("abort", routing.candidate, R.BACK_ON_STABLE, (
            f"candidate {routing.candidate} is withdrawn ({routing.weight:g}% -> 0%): the manifest asks "
            f"for {target.id} at {pct:g}%")))
    actions.append(Action("rollback", target.id, R.REVERTED_TO_CANARY, (
        f"roll alias {desired.alias} back to {previous}: {target.id} returns to a {pct:g}% candidate "
        f"(the manifest asks for {target.id} at {pct:g}%; {previous} was stable before it)"),
        weight=pct, baseline=previous))
    return Plan(desired.name, tuple(actions), target=target.id)


def _unusable_previous(observed: Observed, previous: str | None, keep: int) -> str | None:
    """Why the previous stable cannot serve again, or None when it can."""
    kept = next((v for v in observed.versions if v.id == previous), None)
    if kept is None:
        return f"{previous} was garbage-collected (history.keep is {keep})"
    if kept.verdict == "failed":
        return f"{previous} failed its gates ({kept.verdict_message})"
    if kept.verdict is None:
        return f"{previous} has no gate verdict"
    return None


def previous_stable_of(journal: Iterable[dict[str, Any]], stable: str | None,
                       labels: Mapping[str, str] | None = None) -> str | None:
    """The version that was stable before `stable`'s label was last promoted forward, from the journal.

    Moves back (manual rollback, Rollback, RevertedToCanary) do not count: after rolling back from v2
    to v1, v1's previous stable is still the one before v1, not v2. Nor do corpus revisions of the
    same label (v2 -> v2.r2): a manifest asking for v2 at 25% means beside what preceded v2.
    `labels` maps kept version ids to their index.version; ids of deleted versions fall back to
    their name without the `.rN` revision suffix. None for a first version or an index whose
    journal never saw the promotion.
    """
    return previous_stable_newest_first(reversed(list(journal)), stable, labels)


def previous_stable_newest_first(records: Iterable[dict[str, Any]], stable: str | None,
                                 labels: Mapping[str, str] | None = None) -> str | None:
    """previous_stable_of over the journal's records newest first: it stops at the first match, so a
    journal read lazily from its end is read only back to the last promotion."""
    if stable is None:
        return None

    def label(version: str | None) -> str | None:
        if version is None:
            return None
        return (labels or {}).get(version) or _REVISION.sub("", version)

    for record in records:
        before, after = record.get("from") or {}, record.get("to") or {}
        if (label(after.get("stable")) == label(stable) and label(before.get("stable")) != label(stable)
                and record.get("reason") not in _BACKWARD_REASONS):
            return before.get("stable")
    return None


def _steady_message(version: str, observed: Observed, rollout: dict[str, Any] | None = None) -> str:
    r = observed.routing
    if rollout is not None and rollout.get("aborted"):
        return f"rollout of {version} aborted: {rollout.get('message')}"
    if rollout is not None:
        return (f"{version} at step {rollout['currentStepIndex'] + 1}/{rollout['steps']} ({rollout['step']}): "
                f"{r.weight:g}% of {r.stable}'s traffic, mirror {r.mirror:g}%, interleave {r.interleave:g}%; "
                f"waiting for {rollout['waitingFor']}")
    return f"up to date: {version} serves {r.weight:g}% of {r.stable}'s traffic as candidate"


def _immutable_conflict(desired: Desired, observed: Observed) -> str | None:
    """index.version is a label for one model + build config; reusing it is an error."""
    for v in observed.versions:
        if v.label != desired.label:
            continue
        if v.fingerprint != desired.fingerprint:
            return (f"spec.index.version {desired.label!r} was built with model "
                    f"{_fp(v.fingerprint)}; the manifest now asks for {_fp(desired.fingerprint)}. "
                    "index.version is immutable once built: give the new model a new index.version")
        if (v.factory, v.metric) != (desired.factory, desired.metric):
            return (f"spec.index.version {desired.label!r} was built as {v.factory}/{v.metric}; the "
                    f"manifest now asks for {desired.factory}/{desired.metric}. index.version is "
                    "immutable once built: give the new build a new index.version")
    return None


def _fp(fp: dict) -> str:
    return f"{fp.get('provider')}/{fp.get('name')}@{fp.get('version')} (options {fp.get('optionsHash')})"


def _target(desired: Desired, observed: Observed) -> VersionInfo | None:
    """The built version that matches the manifest and the current corpus, if any."""
    matches = [v for v in observed.versions
               if v.label == desired.label and v.corpus_digest == observed.corpus_digest
               and not (v.stale and desired.retrain_stale)]  # a stale trained index is rebuilt when asked
    return max(matches, key=lambda v: v.created) if matches else None


def next_version_id(label: str, versions: tuple[VersionInfo, ...]) -> str:
    """`label` for the first build; `label.rN` when the corpus changed under the same label."""
    taken = {v.id for v in versions}
    if label not in taken:
        return label
    n = 2
    while f"{label}.r{n}" in taken:
        n += 1
    return f"{label}.r{n}"


def _build(desired: Desired, observed: Observed, version_id: str) -> Action:
    reused = observed.documents - observed.to_embed
    source = f", reusing {reused} vectors of {observed.reuse_from}" if reused else ""
    same_label = any(v.label == desired.label for v in observed.versions)
    stale = [v.id for v in observed.versions if v.label == desired.label and v.stale
             and v.corpus_digest == observed.corpus_digest]
    reason = R.CORPUS_CHANGED if same_label else (R.FIRST_VERSION if not observed.versions else R.NEW_VERSION)
    if stale and desired.retrain_stale:
        reason = R.RETRAINED
    why = {
        R.FIRST_VERSION: "first version of this index",
        R.NEW_VERSION: f"the manifest asks for index version {desired.label}",
        R.CORPUS_CHANGED: f"the corpus changed under index version {desired.label}",
        R.RETRAINED: (f"{', '.join(stale)} kept centroids/codebooks trained before the corpus drifted "
                      "(IndexStale) and spec.checks.corpusDrift.retrain is true: retrain"),
    }[reason]
    provider = desired.fingerprint.get("provider", "")
    verb = "embed" if capabilities(provider).embeds_text else f"read {provider} vectors of"
    return Action("build", version_id, reason,
                  f"build {version_id} ({desired.factory}, {desired.metric}): {why}; {verb} "
                  f"{observed.to_embed} of {observed.documents} documents{source}",
                  embed=observed.to_embed, reuse=reused, label=desired.label)


def _refresh_serving(desired: Desired, observed: Observed, version_id: str, now: float) -> Plan | None:
    """The corpus of the serving version changed and spec.reembed.refresh is inPlace: refresh it in
    place (or rebuild it, saying why), check it, and switch the alias to it if the gates pass.

    No rollout: the model and the index version are the ones serving, only documents changed. None
    when the manifest does not ask for in-place refreshes or another version is being rolled out.
    """
    routing = observed.routing
    stable = next((v for v in observed.versions if v.id == routing.stable), None)
    decision = F.decide(desired.refresh, label=desired.label, stable=routing.stable,
                        stable_label=stable.label if stable else None, stable_stale=bool(stable and stable.stale),
                        candidate=routing.candidate, facts=observed.refresh, now=now)
    if decision is None or stable is None or stable.label != desired.label or routing.candidate is not None:
        return None
    facts = observed.refresh
    if decision.in_place:
        first = Action("refresh", version_id, decision.reason, (
            f"{decision.message}; embed {facts.added + facts.changed} new or changed documents into {version_id}"),
            embed=facts.added + facts.changed, reuse=facts.kept, baseline=stable.id, label=desired.label)
        what = f"{stable.id} refreshed in place ({facts.counts()})"
    else:
        built = _build(desired, observed, version_id)
        first = replace(built, reason=decision.reason if decision.reason == R.REBUILD_DUE else built.reason,
                        message=f"{built.message}; {decision.message}")
        what = f"{stable.id} rebuilt on the changed corpus"
    promote = Action("promote", version_id, decision.reason,
                     f"switch alias {desired.alias} from {stable.id} to {version_id}: {what}", weight=100,
                     baseline=stable.id, if_gates_pass=True)
    return Plan(desired.name, (first, _check(version_id, observed, desired), promote), target=version_id)


def _check(version_id: str, observed: Observed, desired: Desired) -> Action:
    baseline = observed.routing.stable
    if baseline is None:
        msg = f"check {version_id}: golden gates with absolute thresholds (no stable version yet)"
    else:
        msg = f"check {version_id} against stable {baseline}: drift statistics and golden gates"
    return Action("check", version_id, R.CHECKS_PENDING, msg, baseline=baseline)


def _rollout(desired: Desired, observed: Observed, version_id: str, *, if_gates_pass: bool, now: float = 0.0
             ) -> tuple[list[Action], dict[str, Any] | None]:
    """The routing actions toward the manifest's rollout, and the step summary of a stepped one."""
    routing = observed.routing
    if desired.steps is not None and routing.stable is not None and not _older_than_stable(observed, version_id):
        return _stepped(desired, observed, version_id, if_gates_pass=if_gates_pass, now=now)
    return _weighted(desired, observed, version_id, if_gates_pass=if_gates_pass), None


def _stepped(desired: Desired, observed: Observed, version_id: str, *, if_gates_pass: bool, now: float
             ) -> tuple[list[Action], dict[str, Any]]:
    """Run the step machine: begin (first time, new version, rollout changed) or advance the stored state."""
    routing = observed.routing
    state: S.RolloutState | None = observed.rollout
    fingerprint = rollout_digest(desired)
    stored, restamped = state, False
    if (state is None or state.version != version_id
            or not S.same_rollout(state, desired.manifest_digest, fingerprint)):
        restarted = state is not None and state.version == version_id and not state.promoted
        reason, why = ((S.STEPS_RESTARTED, "the manifest changed mid-rollout: the steps start again from the first")
                       if restarted else (S.STEP_STARTED, f"rollout of {version_id} beside {routing.stable} begins"))
        decision = S.begin(version_id, routing.stable, desired.manifest_digest, desired.steps or (), now,
                           reason=reason, why=why, confirm=desired.confirm, rollout_digest=fingerprint,
                           consumed=state.consumed if state is not None else None)
    else:
        # the current manifest (journal records of later commands name it) and, for a state written
        # before it was kept, the rollout digest: from then on only a rollout change restarts the steps
        state = replace(state, manifest_digest=desired.manifest_digest, rollout_digest=fingerprint)
        restamped = state != stored
        if state.confirm != desired.confirm:  # a state stored before it kept the gate (same manifest digest)
            state = replace(state, confirm=desired.confirm)
        decision = S.advance(state, now, verdict=observed.step_verdict, confirmed=observed.confirmed)
    if if_gates_pass:
        # the steps begin once the checks passed, in the reconcile's next pass with its own `now` (a pause
        # must not count the build and the checks); the plan shows where they would start
        return [], S.summary(decision.state, decision.waiting_for, decision.next_due)
    actions = [_step_action(t, desired, routing.stable, False) for t in decision.transitions]
    if decision.changed and not decision.transitions:
        last = None if decision.state.pending else (decision.state.analysis or {}).get("message")
        actions.append(Action("stepState", version_id, R.ANALYSIS_LOOK,
                              f"record the look at step {decision.state.index + 1}: {last or decision.waiting_for}",
                              state=decision.state.to_dict()))
    elif restamped and not decision.transitions:
        actions.append(_restamp_action(stored, decision.state))
    return actions, S.summary(decision.state, decision.waiting_for, decision.next_due)


def rollout_digest(desired: Desired) -> str:
    """The fingerprint of what defines a stepped rollout: the model's vector space, the index, the rollout.

    The corpus counts through the version (another corpus content is another version). What else the
    manifest digest covers (spec.onDelete, history, reembed, suspend, metadata) restarts no steps.
    Checks are not in Desired; they are not run again for a checked candidate either."""
    return S.rollout_fingerprint({
        "model": desired.fingerprint,
        "index": {"version": desired.label, "structure": desired.factory, "metric": desired.metric},
        "rollout": {"percentage": desired.percentage, "steps": list(desired.steps or ()),
                    "confirm": desired.confirm},
    })


def _restamp_action(stored: S.RolloutState, state: S.RolloutState) -> Action:
    """Persist the digests of a rollout that goes on, so the next plan compares with this manifest."""
    at = f"step {state.index + 1}/{len(state.steps)}"
    if stored.manifest_digest == state.manifest_digest:  # a state written before rolloutDigest was kept
        message = f"record the rollout digest in the step state of {state.version} ({at} goes on)"
    else:
        message = (f"the manifest changed outside what defines the rollout of {state.version} (model, index, "
                   f"rollout): {at} goes on; record manifest {state.manifest_digest} in the step state")
    return Action("stepState", state.version, R.MANIFEST_CHANGED, message, state=state.to_dict())


def _step_action(t: S.Transition, desired: Desired, stable: str | None, if_gates_pass: bool = False) -> Action:
    state = t.state
    if t.promote:
        return Action("promote", state.version, t.reason,
                      f"{t.message}: switch alias {desired.alias} from {stable} to {state.version}", weight=100,
                      baseline=stable, if_gates_pass=if_gates_pass, state=state.to_dict())
    candidate, weight, mirror, interleave = S.routing_of(state)
    return Action("step", state.version, t.reason, t.message, weight=weight, baseline=stable,
                  if_gates_pass=if_gates_pass, mirror=mirror, interleave=interleave, state=state.to_dict())


def _weighted(desired: Desired, observed: Observed, version_id: str, *, if_gates_pass: bool) -> list[Action]:
    routing = observed.routing
    if routing.stable is None:
        return [Action("promote", version_id, R.FIRST_VERSION,
                       f"point alias {desired.alias} at {version_id}: the first version becomes stable",
                       weight=100, if_gates_pass=if_gates_pass)]
    if desired.percentage >= 100:
        if _older_than_stable(observed, version_id):
            return [Action("promote", version_id, R.ROLLBACK,
                           f"roll alias {desired.alias} back from {routing.stable} to the older kept version "
                           f"{version_id} (the manifest names it at 100%)", weight=100, baseline=routing.stable,
                           if_gates_pass=if_gates_pass)]
        return [Action("promote", version_id, R.ROLLOUT_COMPLETE,
                       f"switch alias {desired.alias} from {routing.stable} to {version_id} "
                       "(rollout.percentage is 100)", weight=100, baseline=routing.stable,
                       if_gates_pass=if_gates_pass)]
    if routing.candidate == version_id and routing.weight == desired.percentage:
        return []
    current = routing.weight if routing.candidate == version_id else 0.0
    return [Action("setWeight", version_id, R.WEIGHT_CHANGED,
                   f"send {desired.percentage:g}% of {desired.alias} queries to {version_id} (now "
                   f"{current:g}%); {routing.stable} keeps the rest", weight=desired.percentage,
                   baseline=routing.stable, if_gates_pass=if_gates_pass)]


def _older_than_stable(observed: Observed, version_id: str) -> bool:
    by_id = {v.id: v for v in observed.versions}
    version, stable = by_id.get(version_id), by_id.get(observed.routing.stable or "")
    return version is not None and stable is not None and version.created < stable.created


def _with_gc(p: Plan, desired: Desired, observed: Observed, target_id: str) -> Plan:
    doomed = versions_to_delete(observed, desired.keep, protect={target_id})
    if not doomed or p.blocked:  # a manifest that cannot be applied changes nothing, not even history
        return p
    gc = tuple(Action("delete", v.id, R.HISTORY_LIMIT,
                      f"delete {v.id}: beyond history.keep={desired.keep}") for v in doomed)
    return replace(p, actions=p.actions + gc)


def versions_to_delete(observed: Observed, keep: int, protect: set[str]) -> list[VersionInfo]:
    """Oldest versions beyond `keep`; never the stable, the candidate or the target."""
    routing = observed.routing
    protected = protect | {v for v in (routing.stable, routing.candidate) if v}
    newest_first = sorted(observed.versions, key=lambda v: v.created, reverse=True)
    kept = 0
    doomed = []
    for v in newest_first:
        if v.id in protected or kept < keep:
            kept += 1
            continue
        doomed.append(v)
    return doomed
