"""Golden gates on real SciFact vectors: a degraded model is refused, ANN loss is told apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.e2e.test_scifact import scifact_manifest

pytestmark = pytest.mark.scifact


def reconcile(doc: dict, tmp_path: Path, store: Store, roots: list[Path]):
    path = tmp_path / f"{doc['spec']['index']['version']}.yaml"
    path.write_text(yaml.safe_dump(doc))
    [loaded] = load_manifests(path, roots)
    return reconcile_index(loaded, store)


def project(src: Path, dst: Path, dim: int, seed: int = 0) -> None:
    """MiniLM vectors through one random projection to `dim` dimensions: a deliberately worse model."""
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((384, dim)).astype(np.float32)
    dst.mkdir(parents=True)
    for name in ("docs.npy", "queries.npy"):
        np.save(dst / name, np.load(src / name) @ proj)


def test_degraded_model_is_refused_by_the_default_gates(scifact: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    roots = [scifact, tmp_path]
    reconcile(scifact_manifest(scifact, "all-minilm-l6-v2", "v1", []), tmp_path, store, roots)
    assert store.routing("scifact").stable == "v1"
    project(scifact / "vectors" / "all-minilm-l6-v2", tmp_path / "vectors" / "minilm-16d", 16)
    doc = scifact_manifest(scifact, "all-minilm-l6-v2", "v2", [])  # no gates: the default set applies
    opts = doc["spec"]["model"]["options"]
    opts["vectors"] = str(tmp_path / "vectors" / "minilm-16d" / "docs.npy")
    opts["queryVectors"] = str(tmp_path / "vectors" / "minilm-16d" / "queries.npy")
    doc["spec"]["model"].update(dim=16, name="minilm-projected-16d")
    result = reconcile(doc, tmp_path, store, roots)
    [report] = result.reports
    assert not report.passed
    failed = [g for g in report.gates if not g.passed]
    assert {g.metric for g in failed} >= {"ndcg@10"}
    ndcg = next(g for g in failed if g.metric == "ndcg@10")
    print("\n" + ndcg.message)
    assert "95% CI of drop [" in ndcg.message and "golden 3350eb, 300 queries" in ndcg.message
    lo, hi = ndcg.ci
    assert 0.02 < lo <= hi  # the whole interval is a drop larger than maxDrop
    assert store.routing("scifact").stable == "v1"
    assert result.status["regressed"] and result.status["regressed"][0]["text"]


@pytest.mark.slow
def test_ann_recall_separates_index_loss_from_model_loss(scifact: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    numbers = {}
    for version, factory in (("hnsw", "HNSW32"), ("pq", "IVF64,PQ16")):
        doc = scifact_manifest(scifact, "all-minilm-l6-v2", version, [{"metric": "annRecall@10", "min": 0.95}])
        doc["spec"]["index"]["factory"] = factory
        doc["spec"]["history"] = {"keep": 5}
        result = reconcile(doc, tmp_path, store, [scifact])
        [report] = result.reports
        numbers[factory] = (report.metrics["annRecall@10"], report.metrics["ndcg@10"], report.passed)
    print("\nannRecall@10 / nDCG@10 / passed:", numbers)
    hnsw, pq = numbers["HNSW32"], numbers["IVF64,PQ16"]
    assert hnsw[0] >= 0.95 and hnsw[2]
    assert pq[0] < 0.95 and not pq[2]
    assert pq[1] < hnsw[1]  # quality lost to the index, the model being identical
