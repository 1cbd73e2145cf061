"""Gate verdicts from measured numbers: pure, and every message shows its numbers.

A gate has an absolute floor (`min`) and/or a largest allowed drop versus the
stable version (`maxDrop`). With a confidence level, maxDrop is judged on the
upper end of the paired bootstrap interval of the drop (a non-inferiority
test) instead of on the point estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.core import reasons as R
from controller.core.types import GateResult
from controller.manifest.defaults import DEFAULT_MAX_DROP


@dataclass(frozen=True)
class GateSpec:
    metric: str
    min: float | None = None
    max_drop: float | None = None


@dataclass(frozen=True)
class Context:
    golden_digest: str
    queries: int
    confidence: float | None = None  # level of the intervals shown in messages
    non_inferiority: bool = False  # judge maxDrop on the interval, not the point estimate

    def suffix(self, drop_ci: tuple[float, float] | None = None) -> str:
        parts = [f"golden {self.golden_digest[:6]}", f"{self.queries} queries"]
        if drop_ci is not None and self.confidence is not None:
            parts.append(f"{self.confidence:.0%} CI of drop [{drop_ci[0]:.3f}, {drop_ci[1]:.3f}]")
        return "(" + ", ".join(parts) + ")"


def default_gates(k: int) -> list[GateSpec]:
    """Used when a golden set declares no gates: no more than 2 points lost versus stable."""
    return [GateSpec(f"ndcg@{k}", max_drop=DEFAULT_MAX_DROP), GateSpec(f"recall@{k}", max_drop=DEFAULT_MAX_DROP)]


def evaluate_gates(gates: list[GateSpec], new: dict[str, float], old: dict[str, float] | None,
                   ctx: Context, drop_cis: dict[str, tuple[float, float]] | None = None) -> list[GateResult]:
    """One result per (gate, threshold kind); maxDrop is skipped without a stable version."""
    results: list[GateResult] = []
    for gate in gates:
        value = new[gate.metric]
        ci = (drop_cis or {}).get(gate.metric)
        if gate.min is not None:
            results.append(_min_gate(gate.metric, value, gate.min, ctx, ci))
        if gate.max_drop is not None and old is not None:
            results.append(_drop_gate(gate.metric, value, old[gate.metric], gate.max_drop, ctx, ci))
    return results


def _min_gate(metric: str, value: float, floor: float, ctx: Context,
              ci: tuple[float, float] | None) -> GateResult:
    passed = value >= floor
    op = ">=" if passed else "<"
    return GateResult(metric, "min", value, floor, passed,
                      f"{metric} {value:.3f} {op} min {floor:.3f} {ctx.suffix(ci)}", ci=ci)


def _drop_gate(metric: str, value: float, baseline: float, max_drop: float, ctx: Context,
               ci: tuple[float, float] | None) -> GateResult:
    threshold = baseline - max_drop
    if ci is not None and ctx.non_inferiority:
        # non-inferiority: the worst plausible drop must stay within max_drop
        worst_drop = ci[1]
        passed = worst_drop <= max_drop
        op = "<=" if passed else ">"
        msg = (f"{metric} {value:.3f} vs stable {baseline:.3f}: upper bound of drop {worst_drop:.3f} "
               f"{op} maxDrop {max_drop:.3f} {ctx.suffix(ci)}")
    else:
        drop = baseline - value
        passed = drop <= max_drop + 1e-12
        op = "<=" if passed else ">"
        msg = (f"{metric} {value:.3f} vs stable {baseline:.3f}: drop {drop:.3f} {op} maxDrop "
               f"{max_drop:.3f} {ctx.suffix(ci)}")
    return GateResult(metric, "maxDrop", value, threshold, passed, msg, baseline=baseline, ci=ci)


def corpus_loss_gate(stable_version: str, stable_documents: int, removed: int, max_removed: float) -> GateResult:
    """Losing more than `max_removed` of the stable version's documents fails (CorpusShrank).

    Golden gates cannot catch this when the removed documents are unjudged, and a corpus cut
    from 300 documents to 1 passed when no gates were declared.
    """
    share = removed / stable_documents if stable_documents else 0.0
    passed = share <= max_removed + 1e-12
    op = "<=" if passed else ">"
    message = (f"{R.CORPUS_SHRANK if not passed else 'corpus'}: {removed} of {stable_documents} documents of "
               f"stable {stable_version} removed ({share:.1%}) {op} maxRemoved {max_removed:.1%}"
               + ("" if passed else "; raise spec.corpus.maxRemoved if the cut is intended"))
    return GateResult("corpusRemoved", "maxRemoved", share, max_removed, passed, message,
                      reason=R.CORPUS_SHRANK if not passed else None)


def summarize_failures(results: list[GateResult]) -> str:
    failed = [r.message for r in results if not r.passed]
    return "; ".join(failed)
