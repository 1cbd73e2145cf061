"""The corpus-loss guard: a candidate losing more than spec.corpus.maxRemoved of the stable
version's documents fails the gate CorpusShrank, even with no golden gates declared."""

from __future__ import annotations

from pathlib import Path

from controller.core import reasons as R
from controller.core.gates import corpus_loss_gate
from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import manifest, workspace, write_manifest


def test_corpus_loss_gate_is_a_pure_decision():
    ok = corpus_loss_gate("v1", 300, 30, 0.10)
    assert ok.passed and ok.reason is None and ok.value == 0.1
    bad = corpus_loss_gate("v1", 300, 299, 0.10)
    assert not bad.passed and bad.reason == R.CORPUS_SHRANK
    assert bad.threshold == 0.10 and "299 of 300" in bad.message and "maxRemoved 10.0%" in bad.message
    assert corpus_loss_gate("v1", 0, 0, 0.0).passed


def _reconcile(ws: Path, store: Store, version: str, **corpus_extra) -> None:
    doc = manifest(version, checks={"drift": []})
    doc["spec"]["corpus"].update(corpus_extra)
    (loaded,) = load_manifests(write_manifest(ws, doc))
    return reconcile_index(loaded, store)


def _shrink(ws: Path, keep: int) -> None:
    corpus = ws / "data" / "corpus.jsonl"
    corpus.write_text("\n".join(corpus.read_text().splitlines()[:keep]) + "\n")


def test_a_corpus_cut_to_one_document_is_not_promoted(tmp_path):
    ws = workspace(tmp_path, n_docs=40)
    store = Store(tmp_path / "store")
    _reconcile(ws, store, "v1")
    assert store.routing("qs").stable == "v1"
    _shrink(ws, 1)
    result = _reconcile(ws, store, "v2")
    (report,) = result.reports
    gate = next(g for g in report.gates if g.reason == R.CORPUS_SHRANK)
    assert not gate.passed and gate.value > 0.9 and gate.threshold == 0.10
    assert store.routing("qs").stable == "v1"
    assert store.verdict("qs", "v2")["verdict"] == "failed"


def test_raising_max_removed_allows_an_intended_cut(tmp_path):
    ws = workspace(tmp_path, n_docs=40)
    store = Store(tmp_path / "store")
    _reconcile(ws, store, "v1")
    _shrink(ws, 5)
    result = _reconcile(ws, store, "v2", maxRemoved=1.0)
    assert all(g.passed for g in result.reports[0].gates)
    assert store.routing("qs").stable == "v2"
