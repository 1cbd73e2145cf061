"""Plain data the pure core decides on: what is wanted, what is there, what to do.

Nothing here touches disk, a vector backend or the clock; the engine fills these in.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any, Literal

from controller.naming import camel

Verdict = Literal["passed", "failed"]


class Phase(str, Enum):
    """The one-word state of an index; status, metrics, exit codes and health checks match on these.

    A str Enum so comparisons with the plain strings in stored JSON and CR status hold; status
    dicts carry ``.value`` so they serialise to JSON and YAML as plain strings.
    """

    HEALTHY = "Healthy"  # the manifest is applied, the target serves
    PROGRESSING = "Progressing"  # the target serves a share as candidate beside the stable
    PENDING = "Pending"  # actions are planned but not executed (or a resume awaits the next pass)
    PAUSED = "Paused"  # a manual rollback holds a version the manifest asks for
    ROLLED_BACK = "RolledBack"  # the target failed its gates; the alias stays on stable
    STALLED = "Stalled"  # an error, or a manifest that cannot be applied as written
    SUSPENDED = "Suspended"  # spec.suspend or `controller suspend`: nothing is reconciled

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class VersionInfo:
    """A built version as the store knows it."""

    id: str
    label: str
    fingerprint: dict[str, Any]
    factory: str
    metric: str
    corpus_digest: str
    created: str
    documents: int = 0
    verdict: Verdict | None = None
    verdict_message: str = ""
    stale: bool = False  # trained index kept its centroids/codebooks although the corpus drifted


@dataclass(frozen=True)
class Routing:
    """Where an alias sends queries: stable, candidate and the candidate's weight (0-100)."""

    stable: str | None = None
    candidate: str | None = None
    weight: float = 0.0
    held: tuple[str, ...] = ()
    mirror: float = 0.0  # share of queries copied to the candidate off the request path (setMirror)
    interleave: float = 0.0  # share of queries answered with a team-draft merge (interleave step)


@dataclass(frozen=True)
class Desired:
    """What the manifest asks for, reduced to what the decisions need."""

    name: str
    alias: str
    label: str
    fingerprint: dict[str, Any]
    factory: str
    metric: str
    percentage: float
    keep: int
    suspend: bool = False
    manifest_digest: str = ""
    retrain_stale: bool = False  # spec.checks.corpusDrift.retrain: rebuild a stale trained index
    steps: tuple[dict[str, Any], ...] | None = None  # spec.rollout.steps as written; None: percentage rules
    confirm: dict[str, Any] | None = None  # spec.rollout.confirm: {"url", "before": [gates]} holds steps/promotion
    refresh: Any = None  # core.refresh.RefreshPolicy: spec.reembed.refresh/rebuildAfter (None: rebuild)


@dataclass(frozen=True)
class Observed:
    """A read-only snapshot of the store and the corpus for one index."""

    versions: tuple[VersionInfo, ...]
    routing: Routing
    corpus_digest: str
    documents: int
    to_embed: int  # documents with no reusable vector of the desired fingerprint
    reuse_from: str | None = None  # version whose vectors are reused, when any
    # the version that was stable before the current stable was promoted (from the journal):
    # what a manifest asking for the stable at less than 100% goes back to
    previous_stable: str | None = None
    rollout: Any = None  # core.steps.RolloutState of the current or last stepped rollout
    step_verdict: Any = None  # core.steps.Verdict measured for the current step when a look was due
    confirmed: Any = None  # core.steps.Confirmation: the confirm receiver's answer when it was asked
    refresh: Any = None  # core.refresh.RefreshFacts: the stable version vs the corpus, when observed


# rollback: the stable goes back to being a candidate at `weight` beside `baseline` (its previous stable)
# step: a rollout step transition (routing + step state + journal); stepState: an analysis look (state only)
# refresh: a new revision made from the stable version by removing and adding rows (core/refresh.py)
ActionKind = Literal["build", "refresh", "check", "setWeight", "promote", "abort", "rollback", "delete", "step", "stepState"]


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    version: str
    reason: str  # a reason constant from core.reasons
    message: str  # a full sentence with the numbers behind the decision
    weight: float | None = None
    embed: int = 0
    reuse: int = 0
    baseline: str | None = None
    label: str | None = None
    if_gates_pass: bool = False  # runs only when the checks earlier in the plan pass
    mirror: float | None = None
    interleave: float | None = None
    state: dict[str, Any] | None = None  # the rollout step state this action commits (not shown in plans)

    def to_dict(self) -> dict[str, Any]:
        return {camel(k): v for k, v in asdict(self).items()
                if (v not in (None, False) or k == "kind") and k != "state"}


@dataclass(frozen=True)
class Plan:
    name: str
    actions: tuple[Action, ...] = ()
    blocked: str | None = None  # reason constant when the manifest cannot be applied
    message: str = ""  # why nothing happens, or why it is blocked
    target: str | None = None  # the version the manifest asks to serve
    # stepped rollouts: current step, what it waits for and when the plan is next due (nextDueAt, epoch s)
    rollout: dict[str, Any] | None = None

    @property
    def changes(self) -> bool:
        return bool(self.actions)

    @property
    def next_due(self) -> float | None:
        return (self.rollout or {}).get("nextDueAt")

    def to_dict(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "target": self.target,
            "changes": self.changes,
            "blocked": self.blocked,
            "message": self.message,
            "actions": [a.to_dict() for a in self.actions],
        }
        if self.rollout is not None:
            out["rollout"] = self.rollout
        return out


def comparable(plan: dict[str, Any]) -> dict[str, Any]:
    """A plan dict without its rollout summary, which moves with the clock (stepStartedAt of a step that
    would begin now): a reviewed plan is the same plan when its actions are."""
    return {k: v for k, v in plan.items() if k != "rollout"}


@dataclass(frozen=True)
class GateResult:
    metric: str
    kind: Literal["min", "maxDrop", "drift", "maxRemoved"]
    value: float | None
    threshold: float
    passed: bool
    message: str
    baseline: float | None = None
    ci: tuple[float, float] | None = None
    reason: str | None = None  # a reason constant when the gate is not a metric gate (e.g. CorpusShrank)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci"] = list(self.ci) if self.ci else None
        return d


@dataclass
class Condition:
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "status": self.status, "reason": self.reason,
                "message": self.message, "lastTransitionTime": self.last_transition_time}


@dataclass
class CheckReport:
    """What running the checks on one version produced."""

    version: str
    baseline: str | None
    gates: list[GateResult] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    golden_digest: str | None = None
    queries: int = 0
    regressed: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failures(self) -> list[GateResult]:
        return [g for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "baseline": self.baseline,
            "passed": self.passed,
            "gates": [g.to_dict() for g in self.gates],
            "drift": self.drift,
            "metrics": self.metrics,
            "baselineMetrics": self.baseline_metrics,
            "goldenDigest": self.golden_digest,
            "queries": self.queries,
            "regressed": self.regressed,
            "notes": self.notes,
        }
