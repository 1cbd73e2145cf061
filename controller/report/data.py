"""Everything a drift report shows, gathered from the store for two versions.

Old = the baseline the new version was checked against (else the stable
version); new = the candidate, else the last checked version. The numbers
are computed here once, so the HTML and Markdown renderers only draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.checks.drift import neighbour_overlap
from controller.checks.drift.base import bin_proportions, is_constant, row_norms, shared_bin_edges
from controller.checks.drift.cosine_shift import cosine_to_centroid
from controller.checks.drift.pair_cosine_shift import random_pair_cosines
from controller.engine.backend import opened, stored_vectors
from controller.engine.drift import golden_queries
from controller.errors import ControllerError, InvalidInput, NotFound
from controller.store.fs import Store

PAIRS = 5000


@dataclass
class ReportData:
    name: str
    old: str
    new: str
    old_meta: dict[str, Any]
    new_meta: dict[str, Any]
    norms: tuple[np.ndarray, np.ndarray]
    centroid_cosines: tuple[np.ndarray, np.ndarray]
    pair_cosines: tuple[np.ndarray, np.ndarray]
    psi_bins: dict[str, Any] | None  # edges, proportions and per-bin contributions; None for unit norms
    overlap: dict[str, Any] | None  # mean Jaccard / RBO and per-query values
    metrics: dict[str, dict[str, float]]  # version -> metric -> value
    drift: list[dict[str, Any]]
    regressed: list[dict[str, Any]]
    gates: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    same_space: bool = True


def pick_versions(store: Store, name: str, old: str | None, new: str | None) -> tuple[str, str]:
    """Explicit versions win; else the checked candidate against its baseline."""
    routing = store.routing(name)
    status = store.status(name) or {}
    if new is None:
        new = routing.candidate or status.get("checkedVersion") or routing.stable
    if new is None:
        raise NotFound(f"{name} has no built version to report on; run `controller reconcile` first")
    if old is None:
        verdict = store.verdict(name, new) or {}
        old = (verdict.get("report") or {}).get("baseline") or routing.stable
        if old == new or old is None:
            earlier = [v.id for v in store.versions(name) if v.id != new]
            if not earlier:
                raise InvalidInput(f"{name} has one version ({new}); a drift report compares two: "
                                   "pass --old and --new once another version is built", field="--old")
            old = earlier[-1]
    for v in (old, new):
        store.meta(name, v)  # NotFound with a full sentence when a version is missing
    return old, new


def psi_per_bin(ref: np.ndarray, cur: np.ndarray) -> dict[str, Any]:
    """Proportions on the reference-decile bins shared by both samples, and each bin's PSI term."""
    edges = shared_bin_edges(ref)
    rp, cp = bin_proportions(ref, edges), bin_proportions(cur, edges)
    terms = (cp - rp) * np.log(cp / rp)
    return {"edges": edges.tolist(), "reference": rp.tolist(), "current": cp.tolist(), "terms": terms.tolist(),
            "psi": float(terms.sum())}


def _overlap(store: Store, name: str, old: str, new: str, k: int) -> tuple[dict[str, Any] | None, str | None]:
    """Jaccard@k and RBO of the golden queries' top-k lists in the two versions' own indexes."""
    try:
        qa, va, _ = golden_queries(store, name, old)
        qb, vb, _ = golden_queries(store, name, new)
    except ControllerError as exc:
        return None, f"neighbour overlap skipped: {exc}"
    common = [q for q in qa if q in set(qb)]
    if not common:
        return None, "neighbour overlap skipped: the two versions share no golden query"
    pa, pb = {q: i for i, q in enumerate(qa)}, {q: i for i, q in enumerate(qb)}
    lists = []
    doc_number: dict[str, int] = {}
    for version, vectors, pos in ((old, va, pa), (new, vb, pb)):
        ids = store.ids(name, version)
        with opened(store, name, version) as handle:
            _, rows = handle.search(vectors[[pos[q] for q in common]], k)
        # doc ids become shared integers so both versions' lists are comparable
        lists.append(np.array([[doc_number.setdefault(ids[r], len(doc_number)) if r >= 0 else -1 for r in row]
                               for row in rows], dtype=np.int64))
    k = min(k, lists[0].shape[1], lists[1].shape[1])
    summary = neighbour_overlap(lists[0], lists[1], k)
    per_query = [neighbour_overlap(a[None], b[None], k) for a, b in zip(lists[0], lists[1])]
    summary["perQueryJaccard"] = [p["jaccard"] for p in per_query]
    summary["perQueryRbo"] = [p["rbo"] for p in per_query]
    return summary, None


def _checks(store: Store, name: str, old: str, new: str) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    verdict = store.verdict(name, new) or {}
    report = verdict.get("report") or {}
    metrics: dict[str, dict[str, float]] = {}
    if report.get("baselineMetrics") and report.get("baseline") == old:
        metrics[old] = report["baselineMetrics"]
    elif (store.verdict(name, old) or {}).get("report", {}).get("metrics"):
        metrics[old] = store.verdict(name, old)["report"]["metrics"]
    if report.get("metrics"):
        metrics[new] = report["metrics"]
    return metrics, report


def gather(store: Store, name: str, *, old: str | None = None, new: str | None = None, k: int = 10,
           seed: int = 0) -> ReportData:
    store.require_index(name)
    old, new = pick_versions(store, name, old, new)
    om, nm = store.meta(name, old), store.meta(name, new)
    a, b = stored_vectors(store, name, old), stored_vectors(store, name, new)
    na, nb = row_norms(a), row_norms(b)
    rng = np.random.default_rng(seed)
    notes = []
    psi = None
    if is_constant(na) and is_constant(nb):
        notes.append("norms are constant in both versions (unit-norm models): the norm histogram and PSI "
                     "say nothing, the cosine distributions do")
    else:
        psi = psi_per_bin(na, nb)
    overlap, why = _overlap(store, name, old, new, k)
    if why:
        notes.append(why)
    metrics, report = _checks(store, name, old, new)
    same_space = om["fingerprint"] == nm["fingerprint"]
    if not same_space:
        notes.append("the two versions use different models: only space-free statistics compare them")
    return ReportData(
        name=name, old=old, new=new, old_meta=om, new_meta=nm, norms=(na, nb),
        centroid_cosines=(cosine_to_centroid(a, na), cosine_to_centroid(b, nb)),
        pair_cosines=(random_pair_cosines(a, na, PAIRS, rng), random_pair_cosines(b, nb, PAIRS, rng)),
        psi_bins=psi, overlap=overlap, metrics=metrics, drift=report.get("drift", []),
        regressed=report.get("regressed", []), gates=report.get("gates", []), notes=notes, same_space=same_space)
