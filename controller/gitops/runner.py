"""Reconcile a set of loaded manifests, honouring suspension; shared by sync and watch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from controller.engine.reconcile import Hooks, IndexResult, reconcile_index
from controller.errors import ControllerError
from controller.store.flags import suspension
from controller.manifest.load import LoadedManifest
from controller.store.fs import Store


@dataclass
class Outcome:
    """What happened to one index in one pass: a result, a skip (suspended) or an error."""

    name: str
    result: IndexResult | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    def line(self) -> str:
        if self.error:
            return f"index {self.name}: error: {self.error}"
        if self.skipped:
            return f"index {self.name}: skipped: {self.skipped}"
        assert self.result is not None
        done = ", ".join(f"{a.kind} {a.version}" for a in self.result.executed)
        s = self.result.status or {}
        stable = (s.get("stable") or {}).get("version", "-")
        candidate = s.get("candidate")
        routed = f", candidate {candidate['version']} at {s.get('weight', 0):g}%" if candidate else ""
        where = f"; phase {s.get('phase')}: stable {stable}{routed}" if s else ""
        plan = self.result.plan
        # the reason an index is left Stalled must reach the log, not only the status
        blocked = f"; blocked ({plan.blocked}): {plan.message}" if plan.blocked else ""
        return f"index {self.name}: {done or 'no changes'}{where}{blocked}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "skipped": self.skipped, "error": self.error,
                "result": self.result.to_dict() if self.result else None}


def reconcile_all(loaded: list[LoadedManifest], store: Store, hooks: Hooks,
                  progress: Callable[[str], None] = lambda line: None) -> list[Outcome]:
    """Reconcile each index; one failing index does not stop the others."""
    outcomes = []
    for item in loaded:
        held = suspension(store, item.name)
        if held is not None:
            outcome = Outcome(item.name, skipped=f"suspended since {held.get('since')} "
                                                 f"(`controller resume {item.name}` releases it)")
        else:
            try:
                outcome = Outcome(item.name, result=reconcile_index(item, store, hooks=hooks))
            except ControllerError as exc:  # bad data or a locked store: report, keep the last state
                outcome = Outcome(item.name, error=str(exc))
        progress(outcome.line())
        outcomes.append(outcome)
    return outcomes
