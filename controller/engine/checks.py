"""Running the checks of one version: drift versus stable, golden gates, ANN recall.

Effects only (loading indexes and vectors, searching); every verdict comes
from the pure functions in core.gates and checks/.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.checks import golden as G
from controller.checks.drift import NormCache, run_drift
from controller.checks.stats import most_regressed, paired_bootstrap
from controller.core.gates import Context, GateSpec, corpus_loss_gate, default_gates, evaluate_gates
from controller.core.types import CheckReport, GateResult
from controller.embed import capabilities
from controller.engine import backend as B
from controller.engine.embedding import embed_queries
from controller.engine.drift import resolve_threshold
from controller.engine.embedders import EmbedderCache
from controller.errors import CheckError, InvalidInput, StoreError
from controller.manifest.defaults import ANN_RECALL, DEFAULT_CONFIDENCE, REPORTED_METRICS
from controller.manifest.load import LoadedManifest
from controller.store import atomic
from controller.store.fs import Store

ANN_PREFIX = f"{ANN_RECALL}@"


@dataclass
class GoldenRun:
    """One version's evaluation on the golden set."""

    evaluation: G.Evaluation
    ann_recall: dict[str, float]


def run_checks(store: Store, loaded: LoadedManifest, version: str, baseline: str | None) -> CheckReport:
    report = _quality_checks(store, loaded, version, baseline)
    if baseline is not None:  # last, so the quality gates keep their places in status
        report.gates.append(_corpus_loss(store, loaded.name, version, baseline,
                                         loaded.manifest.spec.corpus.max_removed))
    return report


def _quality_checks(store: Store, loaded: LoadedManifest, version: str, baseline: str | None) -> CheckReport:
    spec = loaded.manifest.spec
    report = CheckReport(version=version, baseline=baseline)
    name = loaded.name
    if baseline is not None and spec.checks.drift:
        report.drift, drift_gates = _drift(store, name, version, baseline, spec.checks.drift)
        report.gates += drift_gates
    golden_spec = spec.checks.golden
    if golden_spec is None:
        report.notes.append("no golden set configured: quality is not gated")
        return report
    golden = G.load_golden(loaded.paths["qrels"], loaded.paths.get("queries"))
    metrics = _metric_names(golden_spec)
    cutoffs = _ann_cutoffs(golden_spec)
    embedders = EmbedderCache()
    new = stored_golden_run(store, name, version, golden, metrics, golden_spec.k, cutoffs, embedders)
    old = (stored_golden_run(store, name, baseline, golden, metrics, golden_spec.k, cutoffs, embedders)
           if baseline else None)
    report.golden_digest = golden.digest
    report.queries = len(golden.query_ids)
    report.metrics = {**new.evaluation.metrics, **new.ann_recall}
    report.notes += new.evaluation.warnings
    if old is not None:
        report.baseline_metrics = {**old.evaluation.metrics, **old.ann_recall}
    cis = _drop_intervals(new, old, golden_spec) if old is not None else {}
    ctx = Context(golden.digest, len(golden.query_ids), golden_spec.confidence or DEFAULT_CONFIDENCE,
                  non_inferiority=golden_spec.confidence is not None)
    gates = gate_specs(golden_spec)
    if not golden_spec.gates:
        report.notes.append("no gates declared: default gates " + ", ".join(
            f"{g.metric} maxDrop {g.max_drop}" for g in gates))
    report.gates += evaluate_gates(gates, report.metrics, report.baseline_metrics or None, ctx, cis)
    if old is not None:
        report.regressed = _regressed(golden, old, new, golden_spec.k)
    return report


def gate_specs(golden_spec: Any) -> list[GateSpec]:
    if not golden_spec.gates:
        return default_gates(golden_spec.k)
    return [GateSpec(_canonical(g.metric), g.min, g.max_drop) for g in golden_spec.gates]


def _canonical(metric: str) -> str:
    """'p@10' -> 'precision@10': evaluations are keyed by canonical names."""
    if metric.startswith(ANN_PREFIX):
        return metric
    return G.metric_name(*G.parse_metric(metric))


def _corpus_loss(store: Store, name: str, version: str, baseline: str, max_removed: float) -> GateResult:
    """Share of the stable version's document ids missing from the candidate."""
    old_ids = store.ids(name, baseline)
    new_ids = store.ids(name, version)
    removed = len(set(old_ids) - set(new_ids))
    return corpus_loss_gate(baseline, len(old_ids), removed, max_removed)


def _drift(store: Store, name: str, version: str, baseline: str,
           checks: list[Any]) -> tuple[list[dict[str, Any]], list[GateResult]]:
    ref = B.stored_vectors(store, name, baseline)
    cur = B.stored_vectors(store, name, version)
    same_space = store.meta(name, baseline)["fingerprint"] == store.meta(name, version)["fingerprint"]
    cache = NormCache()
    results, gates = [], []
    for check in checks:
        # auto: the stored `controller calibrate` thresholds of this baseline, else calibrated now
        threshold, source = resolve_threshold(store, name, baseline, check.metric, check.max, ref)
        try:
            result = run_drift(check.metric, ref, cur, threshold=threshold, same_space=same_space, cache=cache)
        except InvalidInput as exc:
            raise InvalidInput(exc.reason, field="spec.checks.drift.metric", value=check.metric) from exc
        results.append({**result.to_dict(), "enforced": check.enforce,
                        "thresholdSource": source or ("max" if check.max is not None else "default")})
        if check.enforce and result.informative:
            gates.append(GateResult(result.statistic, "drift", result.value, result.threshold,
                                    not result.drifted, result.detail))
    return results, gates


def _metric_names(golden_spec: Any) -> list[str]:
    names = {f"{m}@{golden_spec.k}" for m in REPORTED_METRICS}
    names |= {g.metric for g in gate_specs(golden_spec) if not g.metric.startswith(ANN_PREFIX)}
    return sorted(names)


def _ann_cutoffs(golden_spec: Any) -> list[int]:
    """annRecall@k for the evaluation depth and every annRecall gate."""
    gated = [int(g.metric[len(ANN_PREFIX):]) for g in gate_specs(golden_spec) if g.metric.startswith(ANN_PREFIX)]
    return sorted({golden_spec.k, *gated})


#: Where a version's golden evaluations are kept: <index>/evaluations/<version>.<key>.json.
EVALUATIONS = "evaluations"
_EVALUATION_SCHEMA = 1


def stored_golden_run(store: Store, name: str, version: str, golden: G.GoldenSet, metrics: list[str],
                      k: int, ann_cutoffs: list[int], embedders: EmbedderCache | None = None) -> GoldenRun:
    """The golden evaluation of a version, computed once and then read back.

    A built version never changes, so its evaluation on the same golden set (same digest), with
    the same metrics and depths, is the same: the stable version's run is not recomputed each
    time a candidate is checked against it. The key pins all of that plus the version's creation
    stamp, model fingerprint and index, so a version rebuilt under the same name is evaluated
    anew. The file is a cache: unreadable means recompute, and it is written like every store file.
    """
    meta = store.meta(name, version)
    key = hashlib.sha256(json.dumps(
        {"schema": _EVALUATION_SCHEMA, "created": meta.get("created"), "fingerprint": meta.get("fingerprint"),
         "index": meta.get("index"), "corpus": meta.get("corpus", {}).get("digest"), "golden": golden.digest,
         "metrics": sorted(metrics), "k": k, "annCutoffs": sorted(ann_cutoffs)},
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = store.index_dir(name) / EVALUATIONS / f"{version}.{key}.json"
    run = _read_golden_run(path)
    if run is not None:
        return run
    run = _golden_run(store, name, version, golden, metrics, k, ann_cutoffs, embedders)
    try:
        _prune_evaluations(path.parent, {v.id for v in store.versions(name)})
        atomic.write_json(path, _golden_run_doc(run))
    except OSError:
        pass  # a read-only store: the evaluation is still right, only not kept
    return run


def _golden_run_doc(run: GoldenRun) -> dict[str, Any]:
    e = run.evaluation
    return {"metrics": e.metrics, "queryIds": e.query_ids, "goldenDigest": e.golden_digest,
            "missingQueries": e.missing_queries, "unjudgedQrelsDocs": e.unjudged_qrels_docs,
            "warnings": e.warnings, "annRecall": run.ann_recall,
            # repr-exact floats: JSON numbers written by json round-trip to the same doubles
            "perQuery": {m: {"dtype": str(np.asarray(v).dtype), "values": np.asarray(v).tolist()}
                         for m, v in e.per_query.items()}}


def _read_golden_run(path: Path) -> GoldenRun | None:
    try:
        doc = atomic.read_json(path)
        if doc is None:
            return None
        evaluation = G.Evaluation(
            metrics=doc["metrics"], query_ids=doc["queryIds"], golden_digest=doc["goldenDigest"],
            missing_queries=doc["missingQueries"], unjudged_qrels_docs=doc["unjudgedQrelsDocs"],
            warnings=doc["warnings"],
            per_query={m: np.asarray(v["values"], dtype=v["dtype"]) for m, v in doc["perQuery"].items()})
        return GoldenRun(evaluation, doc["annRecall"])
    except (OSError, KeyError, TypeError, ValueError, StoreError):
        return None  # unreadable, or an older or foreign layout: evaluate again


def _prune_evaluations(directory: Path, versions: set[str]) -> None:
    """Drop the evaluations of versions the store no longer has (history.keep removed them)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        if entry.suffix == ".json" and entry.stem.rsplit(".", 1)[0] not in versions:
            try:
                os.unlink(entry)
            except OSError:
                pass


def _golden_run(store: Store, name: str, version: str, golden: G.GoldenSet, metrics: list[str],
                k: int, ann_cutoffs: list[int], embedders: EmbedderCache | None = None) -> GoldenRun:
    qids, queries = query_vectors(store, name, version, golden, embedders)
    doc_ids = store.ids(name, version)
    depth = max([k] + [G.parse_metric(m)[1] for m in metrics])
    with B.opened(store, name, version) as opened:
        scores, rows = opened.search(queries, depth)
        ann = _ann_recall(opened, queries, ann_cutoffs)
    ids = np.asarray(doc_ids, dtype=object)
    run_docs = np.where(rows >= 0, ids[np.maximum(rows, 0)], "")
    evaluation = G.evaluate(golden, qids, run_docs, scores, metrics, corpus_ids=set(doc_ids))
    return GoldenRun(evaluation, ann)


def query_vectors(store: Store, name: str, version: str, golden: G.GoldenSet,
                  embedders: EmbedderCache | None = None) -> tuple[list[str], np.ndarray]:
    """Golden queries embedded in the version's own space (its model, or its copied query vectors)."""
    meta = store.meta(name, version)
    embedder = (embedders or EmbedderCache()).get(store, name, version)
    available = getattr(embedder, "query_ids", lambda: None)()
    if available is not None:
        have = set(available)
        qids = [q for q in golden.query_ids if q in have]
        if not qids:
            raise CheckError(f"none of the {len(golden.query_ids)} golden queries has a vector in the "
                             f"precomputed query vectors of {version}")
        return qids, embedder.embed_queries(qids, [])
    if not capabilities(meta["model"]["provider"]).embeds_text:
        raise CheckError(f"{version} uses {meta['model']['provider']} vectors without options.queryVectors: "
                         "golden queries cannot be embedded")
    missing = [q for q in golden.query_ids if q not in golden.query_texts]
    if missing:
        raise CheckError(f"golden query {missing[0]!r} has no text ({len(missing)} missing): "
                         "set spec.checks.golden.queries to a queries.jsonl with their texts")
    texts = [golden.query_texts[q] for q in golden.query_ids]
    return list(golden.query_ids), embed_queries(store, embedder, golden.query_ids, texts)


def _ann_recall(opened: Any, queries: np.ndarray, cutoffs: list[int]) -> dict[str, float]:
    """Share of the exact top-k the index returns: 'the index is too approximate' vs 'the model is worse'."""
    depth = max(cutoffs)
    _, ann = opened.search(queries, depth)
    _, exact = opened.exact_search(queries, depth)
    return {f"{ANN_PREFIX}{k}": overlap_at(ann[:, :k], exact[:, :k]) for k in cutoffs}


def overlap_at(ann: np.ndarray, exact: np.ndarray) -> float:
    """|ANN top-k ∩ exact top-k| / |exact top-k|, over all queries."""
    valid = exact >= 0
    hits = (ann[:, :, None] == exact[:, None, :]) & valid[:, None, :]
    return float(hits.any(axis=1).sum() / max(valid.sum(), 1))


def _drop_intervals(new: GoldenRun, old: GoldenRun, golden_spec: Any) -> dict[str, tuple[float, float]]:
    """Paired bootstrap interval of the drop (old - new) for each gated metric."""
    confidence = golden_spec.confidence or DEFAULT_CONFIDENCE
    out = {}
    for gate in gate_specs(golden_spec):
        if gate.metric not in new.evaluation.per_query:
            continue
        cmp = paired_bootstrap(old.evaluation.per_query[gate.metric], new.evaluation.per_query[gate.metric],
                               confidence=confidence, seed=0)
        out[gate.metric] = (-cmp.ci_high, -cmp.ci_low)
    return out


def _regressed(golden: G.GoldenSet, old: GoldenRun, new: GoldenRun, k: int) -> list[dict[str, Any]]:
    key = f"ndcg@{k}"
    worst = most_regressed(old.evaluation.query_ids, old.evaluation.per_query[key],
                           new.evaluation.per_query[key], n=5)
    return [{"query": q, "text": golden.query_texts.get(q, ""), "metric": key, "old": o, "new": n}
            for q, o, n in worst]
