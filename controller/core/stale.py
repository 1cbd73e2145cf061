"""Corpus drift under one model: is a trained index stale, and should the build retrain?

Pure. A trained index (coarse centroids, product-quantiser codebooks) encodes the
distribution of the vectors it was trained on. When documents are added or
changed under the same model, the new build may keep the reference's trained
structures and only add vectors (fast: no k-means), which is right as long as
the new documents come from the same distribution. When they do not, the
centroids and codebooks fit the old distribution: lists become unbalanced and
quantisation error grows, so recall falls without any model change. That
index is *stale*; retraining fixes it.

The decision table (``assess``):

  no drift measured            -> keep the trained structures, not stale
  drift, index not trained     -> reported only (flat / graph indexes learn nothing)
  drift, trained, retrain: true  -> train afresh on the new corpus, not stale
  drift, trained, retrain: false -> keep the old training: IndexStale=True
  reference trained differently  -> train afresh (nothing to keep)

Whether an index structure is trained is the backend's knowledge (its ``has_training``); this
module only gets the answer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from controller.core import reasons as R
from controller.core.types import Condition

@dataclass(frozen=True)
class StaleAssessment:
    """What corpus drift means for one build."""

    drifted: bool
    trained: bool
    retrain: bool  # train afresh instead of reusing the reference's trained structures
    stale: bool  # trained structures kept although the corpus drifted
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _summary(results: list[dict[str, Any]]) -> str:
    shown = [r["detail"] for r in results if r.get("informative") and r.get("drifted")]
    if not shown:
        shown = [r["detail"] for r in results if r.get("informative")]
    return "; ".join(shown) if shown else "no informative statistic"


def assess(results: list[dict[str, Any]], *, factory: str, trained: bool, reference: str, compared: int,
           retrain_allowed: bool, can_reuse: bool) -> StaleAssessment:
    """Decide from drift results (``DriftResult.to_dict()``s) of new/changed documents vs ``reference``.

    ``factory`` names the index structure in messages; ``trained`` says whether it learns from the data.
    """
    drifted = any(r.get("informative") and r.get("drifted") for r in results)
    what = f"{compared} new or changed documents vs {reference}"
    if not drifted:
        keep = trained and can_reuse
        tail = (f"; {factory} keeps the centroids/codebooks trained on {reference}" if keep else "")
        return StaleAssessment(False, trained, retrain=not keep, stale=False, reason=R.NO_CORPUS_DRIFT,
                               message=f"no corpus drift in {what}: {_summary(results)}{tail}")
    found = f"corpus drift in {what}: {_summary(results)}"
    if not trained:
        return StaleAssessment(True, False, retrain=False, stale=False, reason=R.INDEX_NOT_TRAINED,
                               message=f"{found}; {factory} has no trained structures, so nothing is stale")
    if retrain_allowed or not can_reuse:
        why = ("spec.checks.corpusDrift.retrain is true" if retrain_allowed
               else f"{reference} was built with another factory or metric")
        return StaleAssessment(True, True, retrain=True, stale=False, reason=R.RETRAINED,
                               message=f"{found}; {factory} retrained on the new corpus ({why})")
    return StaleAssessment(True, True, retrain=False, stale=True, reason=R.CORPUS_DRIFT,
                           message=(f"{found}; {factory} still uses the centroids/codebooks of {reference}, trained before these documents: "
                                    "set spec.checks.corpusDrift.retrain: true (or a new index.version) "
                                    "to retrain"))


def stale_condition(assessment: dict[str, Any] | None) -> Condition | None:
    """The IndexStale condition from a stored assessment (None when corpus drift was never measured)."""
    if not assessment:
        return None
    return Condition("IndexStale", "True" if assessment.get("stale") else "False",
                     assessment.get("reason", R.NO_CORPUS_DRIFT), assessment.get("message", ""))
