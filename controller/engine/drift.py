"""Effects of the three drift scopes and of calibration: load vectors, run statistics, store results.

Scopes (docs/drift.md):
  model change  stable vs shadow of another fingerprint (engine.checks, at check time)
  corpus drift  new or changed documents vs the stable version, same model (at build time)
  query drift   recent or supplied query vectors vs the golden query vectors (on demand)

Every verdict comes from checks/drift (statistics) and core/stale (what a
drifted corpus means for a trained index); this module only gathers inputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from controller.checks.drift import DEFAULT_SPLITS, REGISTRY, NormCache, calibrate_null, run_drift
from controller.backends.base import BackendSettings, RowSharing, TrainingReuse, VersionRef, VersionWriter
from controller.core.stale import StaleAssessment, assess
from controller.embed.base import l2_normalize
from controller.engine import backend as B
from controller.engine.embedders import stored_embedder
from controller.errors import CheckError, InvalidInput, NotFound
from controller.progress import Progress, silent
from controller.store import queries as Q
from controller.store.fs import Store

#: Defaults of query drift: query vectors are usually normalised, so the norm statistics would say nothing.
QUERY_METRICS: tuple[str, ...] = ("cosineShift", "pairCosineShift", "mmd", "ksDims")


# ---- thresholds: default, fixed, or calibrated ------------------------------------------------
def resolve_threshold(store: Store, name: str, reference_version: str, metric: str, wanted: Any,
                      reference: np.ndarray) -> tuple[float | None, str | None]:
    """(threshold, source) for a gate's ``max``: None -> the statistic's default.

    ``auto`` uses the stored calibration of ``controller calibrate`` when it was made on the same
    reference version (so the thresholds describe this reference's noise), else calibrates now.
    """
    if wanted != "auto":
        return (None if wanted is None else float(wanted)), None
    stored = store.calibration(name) or {}
    entry = stored.get("statistics", {}).get(metric)
    if stored.get("version") == reference_version and entry is not None:
        return float(entry["threshold"]), f"calibration.json ({reference_version}, false alarm {stored['falseAlarm']:g})"
    cal = calibrate_null(metric, reference)
    return cal.threshold, f"calibrated now on {reference_version} ({cal.splits} splits, false alarm {cal.false_alarm:g})"


def run_battery(store: Store, name: str, reference_version: str, reference: np.ndarray, current: np.ndarray,
                metrics: list[tuple[str, Any]], *, same_space: bool = True,
                metrics_field: str = "metric") -> list[dict[str, Any]]:
    """Every (metric, max) on one pair, sharing norms; each result records where its threshold came from.

    ``metrics_field`` is where the names came from (a manifest field, or `drift --metrics`): an unknown
    one is refused naming it."""
    cache = NormCache()
    out = []
    for metric, wanted in metrics:
        if metric not in REGISTRY:
            raise InvalidInput(f"unknown drift statistic {metric!r}; valid names: {', '.join(sorted(REGISTRY))}",
                               field=metrics_field, value=metric)
        threshold, source = resolve_threshold(store, name, reference_version, metric, wanted, reference)
        r = run_drift(metric, reference, current, threshold=threshold, same_space=same_space, cache=cache)
        out.append({**r.to_dict(), "thresholdSource": source or ("max" if wanted is not None else "default")})
    return out


# ---- calibration -------------------------------------------------------------------------------
def calibrate_index(store: Store, name: str, *, version: str | None = None, metrics: list[str] | None = None,
                    splits: int = DEFAULT_SPLITS, false_alarm: float = 0.05, seed: int = 0,
                    save: bool = True, progress: Progress = silent) -> dict[str, Any]:
    """Null distributions of each statistic on the stable version's vectors; stored for ``max: auto``."""
    store.require_index(name)
    version = version or store.routing(name).stable
    if version is None:
        raise NotFound(f"{name} has no stable version to calibrate on; run `controller reconcile` first")
    ref = B.stored_vectors(store, name, version)
    names = metrics or sorted(REGISTRY)
    stats: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    unknown = [m for m in names if m not in REGISTRY]
    if unknown:
        raise InvalidInput(f"unknown drift statistic {unknown[0]!r}; valid names: {', '.join(sorted(REGISTRY))}",
                           field="--metrics", value=unknown[0])
    for done, metric in enumerate(names):
        progress(done, len(names))
        try:
            stats[metric] = calibrate_null(metric, ref, splits=splits, false_alarm=false_alarm, seed=seed).to_dict()
        except CheckError as exc:  # e.g. norms of a unit-norm model: nothing to calibrate
            skipped[metric] = str(exc)
    progress(len(names), len(names))
    meta = store.meta(name, version)
    record = {"name": name, "version": version, "fingerprint": meta["fingerprint"],
              "corpusDigest": meta["corpus"]["digest"], "rows": int(ref.shape[0]), "splits": splits,
              "falseAlarm": false_alarm, "seed": seed, "statistics": stats, "skipped": skipped}
    if save:
        store.write_calibration(name, record)
    return record


# ---- corpus drift (build time) -------------------------------------------------------------------
@dataclass
class CorpusDriftRecord:
    """What was measured for one build; ``assessment`` drives training and IndexStale."""

    reference: str
    added: int
    changed: int
    removed: int
    compared: int
    results: list[dict[str, Any]]
    assessment: StaleAssessment

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "added": self.added, "changed": self.changed,
                "removed": self.removed, "compared": self.compared, "results": self.results,
                "assessment": self.assessment.to_dict()}


def corpus_drift_reference(store: Store, name: str, fingerprint: dict[str, Any]) -> str | None:
    """The stable version when it has the same model: the distribution the corpus is compared to."""
    stable = store.routing(name).stable
    if stable is None:
        return None
    try:
        meta = store.meta(name, stable)
    except NotFound:
        return None
    return stable if meta["fingerprint"] == fingerprint else None


def measure_corpus_drift(store: Store, name: str, reference: str, ids: list[str], hashes: list[str],
                         vectors: np.ndarray, *, spec: Any, index_spec: Any) -> CorpusDriftRecord:
    """New or changed documents (or the whole new corpus) vs the reference version's vectors."""
    ref_ids = store.ids(name, reference)
    ref_hashes = store.hashes(name, reference)
    old = dict(zip(ref_ids, ref_hashes))
    new_rows = [i for i, (d, h) in enumerate(zip(ids, hashes)) if d not in old]
    changed_rows = [i for i, (d, h) in enumerate(zip(ids, hashes)) if d in old and old[d] != h]
    removed = len(set(old) - set(ids))
    rows = list(range(len(ids))) if spec.compare == "all" else sorted(new_rows + changed_rows)
    ref_meta = store.meta(name, reference)
    factory, metric = index_spec.structure(), index_spec.metric
    can_reuse = (ref_meta["index"]["factory"], ref_meta["index"]["metric"]) == (factory, metric)
    ref = B.stored_vectors(store, name, reference)
    if len(rows) < 2:
        results: list[dict[str, Any]] = []
        note = (f"only {len(rows)} new or changed document(s): too few to measure corpus drift "
                f"({removed} removed)")
        results.append({"statistic": "corpus", "value": None, "threshold": 0.0, "drifted": False,
                        "informative": False, "detail": note, "effectSize": None, "pValue": None})
    else:
        cur = np.ascontiguousarray(vectors[rows])
        results = run_battery(store, name, reference, ref, cur, [(m.metric, m.max) for m in spec.metrics])
    decision = assess(results, factory=factory, trained=has_training(index_spec), reference=reference,
                      compared=len(rows), retrain_allowed=spec.retrain, can_reuse=can_reuse)
    return CorpusDriftRecord(reference, len(new_rows), len(changed_rows), removed, len(rows), results, decision)


def has_training(index_spec: Any) -> bool:
    """The index structure learns from the vectors and the backend can keep that training."""
    backend = B.get_backend(index_spec.backend_settings()[0])
    if not backend.capabilities.reusable_training:
        return False  # rebuilt from scratch every time: nothing can go stale
    kind, params = index_spec.backend_settings()
    return cast(TrainingReuse, backend).has_training(BackendSettings(kind, params))


# ---- query drift (on demand) ---------------------------------------------------------------------
def reference_queries(store: Store, name: str, version: str) -> tuple[np.ndarray, str]:
    """Golden query vectors in the version's own space, and where they came from."""
    _, vectors, source = golden_queries(store, name, version)
    return vectors, source


def golden_queries(store: Store, name: str, version: str) -> tuple[list[str], np.ndarray, str]:
    """(query ids, vectors, source) of the golden queries in the version's own space.

    Precomputed models carry their query vectors (versions/<v>/queries/vectors.npy); other models
    embed the golden query texts copied at build time (versions/<v>/queries/golden.jsonl) with the
    version's stored embedder.
    """
    d = store.version_dir(name, version)
    if (d / "queries" / "vectors.npy").is_file():
        vectors = np.load(d / "queries" / "vectors.npy")
        meta = store.meta(name, version)
        if meta["model"].get("normalize", True):
            vectors = l2_normalize(np.ascontiguousarray(vectors, dtype=np.float32))
        ids_file = d / "queries" / "ids.txt"
        qids = ([l.strip() for l in ids_file.read_text(encoding="utf-8").splitlines() if l.strip()]
                if ids_file.is_file() else [str(i) for i in range(vectors.shape[0])])
        return qids, vectors, f"precomputed golden query vectors of {version}"
    texts_file = d / "queries" / "golden.jsonl"
    if not texts_file.is_file():
        raise NotFound(f"{name}/{version} has no golden queries to compare with (no queries/ in the version; "
                       "versions built before query drift existed lack them): pass --reference FILE.npy")
    qids, texts = [], []
    for line in texts_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            doc = json.loads(line)
            qids.append(str(doc.get("_id", doc.get("id"))))
            texts.append(str(doc.get("text", "")))
    if len(qids) < 2:
        raise CheckError(f"{texts_file} has {len(qids)} queries; query drift needs at least 2")
    vectors = stored_embedder(store, name, version).embed_queries(qids, texts)
    return qids, vectors, f"{len(qids)} golden query texts of {version} embedded with its model"


def record_served_query(store: Store, name: str, fingerprint: dict[str, Any], vectors: np.ndarray
                        ) -> Q.Reservoir | None:
    """Offer served query vectors to the reservoir of the model that embedded them; None when the index
    is gone (deleted while it was served: recording must not create its directory again)."""
    index_dir = store.index_dir(name)
    if not index_dir.is_dir():
        return None
    return Q.record_queries(index_dir, fingerprint, vectors)


#: Fewest query vectors on either side of a query drift comparison (every statistic needs two rows).
MIN_QUERY_ROWS = 2


@dataclass(frozen=True)
class QueryFields:
    """Where each input of query_drift came from, so an error names the flag (or API argument) at fault."""

    current: str = "--queries"
    reference: str = "--reference"
    metrics: str = "--metrics"


def require_version(store: Store, name: str, version: str) -> dict[str, Any]:
    """The version's meta, or NotFound naming it and the kept versions (before anything reads its files)."""
    try:
        return store.meta(name, version)
    except NotFound:
        kept = ", ".join(v.id for v in store.versions(name)) or "none"
        raise NotFound(f"index {name!r} has no version {version!r} (kept: {kept})") from None


def check_query_matrix(m: np.ndarray, what: str, field: str, *, name: str, version: str, dim: int) -> None:
    """One side of a query drift comparison: (rows >= MIN_QUERY_ROWS, the version's dim), or InvalidInput."""
    if m.ndim != 2 or m.shape[1] != dim:
        raise InvalidInput(f"{what} have shape {m.shape}; {name}/{version} has {dim} dimensions",
                           field=field, value=m.shape)
    if m.shape[0] < MIN_QUERY_ROWS:
        raise InvalidInput(f"{what} have {m.shape[0]} rows; query drift needs at least {MIN_QUERY_ROWS}",
                           field=field, value=m.shape[0])


def query_drift(store: Store, name: str, current: np.ndarray, *, source: str, version: str | None = None,
                reference: np.ndarray | None = None, metrics: list[tuple[str, Any]] | None = None,
                fields: QueryFields = QueryFields()) -> dict[str, Any]:
    """Recent (or supplied) query vectors vs the reference queries of ``version`` (default: stable).

    ``fields`` names the flags the inputs came from (the CLI's by default) in InvalidInput errors."""
    store.require_index(name)
    version = version or store.routing(name).stable
    if version is None:
        raise NotFound(f"{name} has no stable version; run `controller reconcile` first")
    # a missing version first: its absent golden queries would otherwise be blamed, with advice to pass --reference
    dim = int(require_version(store, name, version)["index"]["dim"])
    check_query_matrix(current, "current queries", fields.current, name=name, version=version, dim=dim)
    if reference is None:  # the golden queries, in the version's own space (fewer than 2: a CheckError)
        reference, ref_source = reference_queries(store, name, version)
    else:
        ref_source = "supplied reference file"
        check_query_matrix(reference, "reference queries", fields.reference, name=name, version=version, dim=dim)
    results = run_battery(store, name, version, np.asarray(reference, dtype=np.float32),
                          np.asarray(current, dtype=np.float32),
                          metrics or [(m, None) for m in QUERY_METRICS], metrics_field=fields.metrics)
    drifted = [r["statistic"] for r in results if r["informative"] and r["drifted"]]
    return {"name": name, "version": version, "scope": "query", "reference": ref_source,
            "referenceRows": int(reference.shape[0]), "current": source, "currentRows": int(current.shape[0]),
            "drifted": bool(drifted), "driftedStatistics": drifted, "results": results}


# ---- hooks the reconciler calls ------------------------------------------------------------------
def corpus_drift_for_build(store: Store, loaded: Any, corpus: Any, vectors: np.ndarray) -> CorpusDriftRecord | None:
    """Measured when the manifest asks (spec.checks.corpusDrift), the stable version has the same
    model and the corpus differs from the one it was built on; else None (nothing to compare)."""
    spec = loaded.manifest.spec
    if spec.checks.corpus_drift is None:
        return None
    reference = corpus_drift_reference(store, loaded.name, spec.model.fingerprint())
    if reference is None:
        return None
    ref_meta = store.meta(loaded.name, reference)
    if ref_meta["corpus"]["digest"] == corpus.digest:
        return _retrain_record(ref_meta, spec)
    return measure_corpus_drift(store, loaded.name, reference, corpus.ids, corpus.hashes, vectors,
                                spec=spec.checks.corpus_drift, index_spec=spec.index)


def _retrain_record(ref_meta: dict[str, Any], spec: Any) -> CorpusDriftRecord | None:
    """Same corpus as a stale stable version, rebuilt because retrain is now asked: keep its numbers."""
    old = ref_meta.get("corpusDrift") or {}
    if not (old.get("assessment") or {}).get("stale") or not spec.checks.corpus_drift.retrain:
        return None
    decision = assess(old["results"], factory=spec.index.structure(), trained=has_training(spec.index),
                      reference=old["reference"],
                      compared=old["compared"], retrain_allowed=True, can_reuse=True)
    return CorpusDriftRecord(old["reference"], old["added"], old["changed"], old["removed"], old["compared"],
                             old["results"], decision)


def version_writer(store: Store, loaded: Any, record: CorpusDriftRecord | None, ref: VersionRef,
                   settings: BackendSettings, shared: tuple[str, np.ndarray] | None = None) -> VersionWriter:
    """A writer for the new version.

    On the reference's trained structures when the assessment keeps them (``reusable_training``);
    else sharing the unchanged rows of ``shared`` = (version, row of each document there or -1)
    when the backend can (``shares_rows``); else a fresh build.
    """
    backend = B.get_backend(settings.type)
    keeps_training = (record is not None and not record.assessment.retrain and record.assessment.trained
                      and backend.capabilities.reusable_training)
    if keeps_training:
        assert record is not None
        reference = B.version_ref(store, loaded.name, record.reference)
        return cast(TrainingReuse, backend).create_version_on_trained(ref, settings, reference)
    if shared is not None and backend.capabilities.shares_rows:
        version, rows = shared
        if B.recorded_settings(store.meta(loaded.name, version)) == settings:
            base = B.version_ref(store, loaded.name, version)
            return cast(RowSharing, backend).create_version_sharing(ref, settings, base, rows)
    return backend.create_version(ref, settings)
