"""Real data: SciFact with real all-MiniLM-L6-v2 and E5 vectors, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from controller.cli.main import main

pytestmark = pytest.mark.scifact


def scifact_manifest(data: Path, folder: str, version: str, gates: list[dict]) -> dict:
    return {
        "apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "scifact"},
        "spec": {
            "corpus": {"path": str(data / "corpus.jsonl"), "idField": "_id", "textFields": ["title", "text"]},
            "model": {"provider": "precomputed", "name": folder, "version": "1", "dim": 384, "options": {
                "vectors": str(data / "vectors" / folder / "docs.npy"), "ids": str(data / "doc_ids.txt"),
                "queryVectors": str(data / "vectors" / folder / "queries.npy"),
                "queryIds": str(data / "query_ids.txt")}},
            "index": {"version": version, "factory": "Flat", "metric": "cosine"},
            "rollout": {"percentage": 100},
            "checks": {"drift": [{"metric": "psi"}, {"metric": "cosineShift"}],
                       "golden": {"queries": str(data / "queries.jsonl"), "qrels": str(data / "qrels" / "test.tsv"),
                                  "k": 10, "gates": gates}},
        },
    }


def status_json(store: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["status", "scifact", "--store", str(store), "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_minilm_then_e5(scifact: Path, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    common = ["--store", str(store), "--data-root", str(scifact)]
    v1 = tmp_path / "v1.yaml"
    v1.write_text(yaml.safe_dump(scifact_manifest(scifact, "all-minilm-l6-v2", "v1",
                                                  [{"metric": "ndcg@10", "min": 0.6}])))
    assert main(["reconcile", str(v1), *common]) == 0
    s = status_json(store, capsys)
    assert s["stable"]["version"] == "v1" and s["phase"] == "Healthy"
    assert s["metrics"]["ndcg@10"] == pytest.approx(0.645, abs=0.002)
    # pinned to 1e-9 as main computed them before the chunked build path: a faster build may not move them
    assert s["metrics"]["ndcg@10"] == pytest.approx(0.6450816521455774, abs=1e-9)
    assert s["metrics"]["mrr@10"] == pytest.approx(0.6047248677248678, abs=1e-9)
    assert s["metrics"]["recall@10"] == pytest.approx(0.7833333333333333, abs=1e-9)
    assert s["stable"]["fingerprint"]["name"] == "all-minilm-l6-v2"
    assert {"name", "alias", "stable", "candidate", "weight", "phase", "gates"} <= set(s)
    assert all({"metric", "value", "threshold", "passed"} <= set(g) for g in s["gates"])

    v2 = tmp_path / "v2.yaml"
    v2.write_text(yaml.safe_dump(scifact_manifest(scifact, "multilingual-e5-small-q4", "v2",
                                                  [{"metric": "ndcg@10", "maxDrop": 0.02}])))
    assert main(["reconcile", str(v2), *common]) == 0
    s = status_json(store, capsys)
    assert s["stable"]["version"] == "v2" and s["candidate"] is None and s["phase"] == "Healthy"
    gate = s["gates"][0]
    assert gate["kind"] == "maxDrop" and gate["passed"]
    assert gate["baseline"] == pytest.approx(0.645, abs=0.002)
    assert s["metrics"]["ndcg@10"] == pytest.approx(0.6549, abs=0.002)
    # a model swap is flagged by a space-free statistic; norms of unit-norm models are "not informative"
    drift = {d["statistic"]: d for d in s["drift"]}
    assert drift["cosineShift"]["drifted"] and not drift["psi"]["informative"]
    assert s["metrics"]["ndcg@10"] == pytest.approx(0.6549494614893412, abs=1e-9)
    assert s["metrics"]["mrr@10"] == pytest.approx(0.6218915343915343, abs=1e-9)
    assert drift["cosineShift"]["value"] == pytest.approx(0.5495201924226323, abs=1e-9)
