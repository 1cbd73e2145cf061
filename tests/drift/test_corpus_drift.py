"""Corpus drift under one model (SciFact MiniLM): 20% added documents from the same
distribution raise no alarm and keep the IVF training; 20% from a shifted
distribution are detected and make the IVF index stale, or retrain it when asked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.backends.faiss import is_trained_factory
from controller.core.stale import assess
from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store

pytestmark = pytest.mark.scifact

SHIFT = 0.3  # pull toward one random direction, then renormalise: a new topic


def condition(status: dict, kind: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == kind)


class CorpusWorld:
    """A corpus file whose content changes between reconciles, with precomputed vectors for every id."""

    def __init__(self, scifact: Path, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        docs = [json.loads(l) for l in (scifact / "corpus.jsonl").read_text().splitlines() if l.strip()]
        x = np.load(scifact / "vectors" / "all-minilm-l6-v2" / "docs.npy")
        rng = np.random.default_rng(0)
        perm = rng.permutation(len(docs))
        cut = int(0.8 * len(docs))
        self.docs = docs
        self.reference, self.held = perm[:cut], perm[cut:]
        u = rng.standard_normal(x.shape[1]).astype(np.float32)
        u /= np.linalg.norm(u)
        shifted = x[self.held] + SHIFT * u
        shifted /= np.linalg.norm(shifted, axis=1, keepdims=True)
        self.shifted_docs = [{**docs[i], "_id": f"new-{docs[i]['_id']}"} for i in self.held]
        ids = [d["_id"] for d in docs] + [d["_id"] for d in self.shifted_docs]
        np.save(root / "vectors.npy", np.concatenate([x, shifted]).astype(np.float32))
        (root / "ids.txt").write_text("\n".join(ids) + "\n")

    def write_corpus(self, *, same: bool = False, shifted: bool = False) -> None:
        rows = [self.docs[i] for i in self.reference]
        if same:
            rows += [self.docs[i] for i in self.held]
        if shifted:
            rows += self.shifted_docs
        (self.root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in rows))

    def manifest(self, factory: str, retrain: bool = False) -> Path:
        doc = {
            "apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "docs"},
            "spec": {
                "corpus": {"path": "corpus.jsonl", "idField": "_id", "textFields": ["title", "text"]},
                "model": {"provider": "precomputed", "name": "all-minilm-l6-v2", "version": "1", "dim": 384,
                          "options": {"vectors": "vectors.npy", "ids": "ids.txt"}},
                "index": {"version": "v1", "factory": factory, "metric": "cosine"},
                "checks": {"corpusDrift": {"retrain": retrain}},
                "history": {"keep": 5},
            },
        }
        path = self.root / "index.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def reconcile(self, store: Store, factory: str, retrain: bool = False):
        [loaded] = load_manifests(self.manifest(factory, retrain))
        return reconcile_index(loaded, store)


def test_decision_table_is_pure() -> None:
    drifted = [{"statistic": "mmd", "informative": True, "drifted": True, "detail": "MMD^2 0.03 > max 0.002"}]
    calm = [{"statistic": "mmd", "informative": True, "drifted": False, "detail": "MMD^2 0 <= max 0.002"}]
    kw = dict(reference="v1", compared=100, can_reuse=True)
    assert is_trained_factory("IVF64,PQ16") and is_trained_factory("OPQ8,IVF16,PQ8")
    assert not is_trained_factory("HNSW32") and not is_trained_factory("Flat")
    a = assess(calm, factory="IVF64,Flat", trained=True, retrain_allowed=False, **kw)
    assert not a.drifted and not a.stale and not a.retrain and "keeps the centroids" in a.message
    a = assess(drifted, factory="IVF64,Flat", trained=True, retrain_allowed=False, **kw)
    assert a.stale and not a.retrain and a.reason == "CorpusDrift" and "MMD^2 0.03 > max 0.002" in a.message
    a = assess(drifted, factory="IVF64,Flat", trained=True, retrain_allowed=True, **kw)
    assert a.retrain and not a.stale and a.reason == "Retrained"
    a = assess(drifted, factory="HNSW32", trained=False, retrain_allowed=False, **kw)
    assert a.drifted and not a.stale and a.reason == "IndexNotTrained"
    a = assess(drifted, factory="IVF64,Flat", trained=True, retrain_allowed=False, reference="v1", compared=5, can_reuse=False)
    assert a.retrain and not a.stale


@pytest.mark.slow
def test_ivf_same_distribution_then_shifted_then_retrain(scifact: Path, tmp_path: Path) -> None:
    world = CorpusWorld(scifact, tmp_path / "ws")
    store = Store(tmp_path / "store")
    world.write_corpus()
    world.reconcile(store, "IVF64,Flat")
    assert store.routing("docs").stable == "v1"

    # 20% added documents from the same distribution: no alarm, the IVF training is kept
    world.write_corpus(same=True)
    result = world.reconcile(store, "IVF64,Flat")
    status = result.status
    meta = store.meta("docs", "v1.r2")
    record = meta["corpusDrift"]
    print("\nsame distribution:", [(r["statistic"], r["value"], r["threshold"]) for r in record["results"]])
    assert record["added"] == len(world.held) and record["compared"] == len(world.held)
    assert not any(r["drifted"] for r in record["results"])
    assert all(r["informative"] for r in record["results"])
    assert meta["corpusDrift"]["trainedOn"] == "v1"
    stale = condition(status, "IndexStale")
    assert stale["status"] == "False" and stale["reason"] == "NoCorpusDrift"
    assert store.routing("docs").stable == "v1.r2"

    # 20% added documents from a shifted distribution: detected, the kept training is stale
    world.write_corpus(same=True, shifted=True)
    status = world.reconcile(store, "IVF64,Flat").status
    record = store.meta("docs", "v1.r3")["corpusDrift"]
    print("shifted:", [(r["statistic"], r["value"], r["threshold"]) for r in record["results"]])
    assert record["reference"] == "v1.r2" and record["added"] == len(world.held)
    assert {r["statistic"] for r in record["results"] if r["drifted"]} == {"mmd", "ksDims", "cosineShift"}
    stale = condition(status, "IndexStale")
    print(stale["message"])
    assert stale["status"] == "True" and stale["reason"] == "CorpusDrift"
    assert "MMD^2" in stale["message"] and "> max 0.002" in stale["message"]
    assert status["corpusDrift"]["version"] == "v1.r3"

    # the manifest now asks for a retrain: a new version trained on the new corpus
    result = world.reconcile(store, "IVF64,Flat", retrain=True)
    build = next(a for a in result.executed if a.kind == "build")
    assert build.version == "v1.r4" and build.reason == "Retrained"
    meta = store.meta("docs", "v1.r4")
    assert meta["corpusDrift"]["trainedOn"] == "v1.r4"
    stale = condition(result.status, "IndexStale")
    assert stale["status"] == "False" and stale["reason"] == "Retrained"
    assert store.routing("docs").stable == "v1.r4"


def test_flat_index_reports_corpus_drift_but_nothing_is_stale(scifact: Path, tmp_path: Path) -> None:
    world = CorpusWorld(scifact, tmp_path / "ws")
    store = Store(tmp_path / "store")
    world.write_corpus()
    world.reconcile(store, "Flat")
    world.write_corpus(shifted=True)
    status = world.reconcile(store, "Flat").status
    stale = condition(status, "IndexStale")
    assert stale["status"] == "False" and stale["reason"] == "IndexNotTrained"
    assert "corpus drift in" in stale["message"] and "nothing is stale" in stale["message"]
