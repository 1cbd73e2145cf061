"""The stable version's golden evaluation is computed once and read back when a candidate is checked."""

from __future__ import annotations

import shutil
from pathlib import Path

from controller.engine import checks as C
from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import V2_OPTIONS, manifest, workspace, write_manifest


def reconcile(ws: Path, doc: dict, store: Store):
    [loaded] = load_manifests(write_manifest(ws, doc))
    return reconcile_index(loaded, store)


def test_stable_golden_run_is_reused_and_equal_to_a_recomputed_one(tmp_path, monkeypatch):
    ws = workspace(tmp_path, n_docs=40)
    store = Store(tmp_path / "store")
    evaluated: list[str] = []
    real = C._golden_run
    monkeypatch.setattr(C, "_golden_run", lambda s, n, version, *a, **k: evaluated.append(version) or
                        real(s, n, version, *a, **k))
    reconcile(ws, manifest("v1"), store)
    assert evaluated == ["v1"]
    fresh = tmp_path / "fresh"
    shutil.copytree(store.root, fresh)  # the same store before v2, to recompute v1 there

    evaluated.clear()
    result = reconcile(ws, manifest("v2", V2_OPTIONS, model_version="2"), store)
    [report] = [r for r in result.reports if r.version == "v2"]
    assert report.baseline == "v1" and report.baseline_metrics
    assert evaluated == ["v2"]  # v1 was read back, not evaluated again

    stored = list((store.index_dir("qs") / C.EVALUATIONS).glob("v1.*.json"))
    assert len(stored) == 1
    for path in (fresh / "indexes" / "qs" / C.EVALUATIONS).glob("*.json"):
        path.unlink()  # no stored evaluation: v1 is evaluated again, with the same numbers
    evaluated.clear()
    again = reconcile(ws, manifest("v2", V2_OPTIONS, model_version="2"), Store(fresh))
    [recomputed] = [r for r in again.reports if r.version == "v2"]
    assert evaluated == ["v1", "v2"] or evaluated == ["v2", "v1"]
    assert recomputed.baseline_metrics == report.baseline_metrics
    assert recomputed.metrics == report.metrics
    assert [g.to_dict() for g in recomputed.gates] == [g.to_dict() for g in report.gates]
    assert recomputed.regressed == report.regressed


def test_an_unreadable_stored_evaluation_is_recomputed(tmp_path, monkeypatch):
    ws = workspace(tmp_path, n_docs=40)
    store = Store(tmp_path / "store")
    reconcile(ws, manifest("v1"), store)
    [path] = (store.index_dir("qs") / C.EVALUATIONS).glob("v1.*.json")
    path.write_text("{not json")
    evaluated: list[str] = []
    real = C._golden_run
    monkeypatch.setattr(C, "_golden_run", lambda s, n, version, *a, **k: evaluated.append(version) or
                        real(s, n, version, *a, **k))
    result = reconcile(ws, manifest("v2", V2_OPTIONS, model_version="2"), store)
    assert sorted(evaluated) == ["v1", "v2"]
    assert [r for r in result.reports if r.version == "v2"][0].baseline_metrics
