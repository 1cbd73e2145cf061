"""The reconcile loop on a real store with real FAISS builds of a small corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controller.engine.manual import rollback
from controller.engine.reconcile import reconcile_index
from controller.errors import ControllerError, StoreError
from controller.core.types import Routing
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import BAD_OPTIONS, V2_OPTIONS, manifest, tree_snapshot, write_manifest


def apply(ws: Path, doc: dict, store: Store, **kw):
    [loaded] = load_manifests(write_manifest(ws, doc))
    return reconcile_index(loaded, store, **kw)


def test_first_version_becomes_stable(ws, store):
    result = apply(ws, manifest("v1"), store)
    assert [a.kind for a in result.executed] == ["build", "check", "promote"]
    assert store.routing("qs") == Routing(stable="v1", candidate=None, weight=0.0)
    assert result.status["phase"] == "Healthy"
    assert result.status["gates"][0]["metric"] == "ndcg@10" and result.status["gates"][0]["passed"]


def test_second_reconcile_with_nothing_changed_builds_nothing(ws, store):
    first = apply(ws, manifest("v1"), store)
    assert (first.built, first.embedded) == (1, first.status["stable"]["documents"])
    status_before = (store.index_dir("qs") / "status.json").read_bytes()
    second = apply(ws, manifest("v1"), store)
    assert (second.built, second.embedded) == (0, 0)
    assert second.executed == [] and second.reports == []
    assert (store.index_dir("qs") / "status.json").read_bytes() == status_before


def test_dry_run_changes_nothing(ws, store):
    apply(ws, manifest("v1"), store)
    before = tree_snapshot(store.root)
    result = apply(ws, manifest("v2", V2_OPTIONS, pct=25), store, dry_run=True)
    assert [a.kind for a in result.plan.actions] == ["build", "check", "setWeight"]
    assert tree_snapshot(store.root) == before


def test_dry_run_on_an_empty_store_creates_nothing(ws, tmp_path):
    store = Store(tmp_path / "never")
    apply(ws, manifest("v1"), store, dry_run=True)
    assert not store.root.exists()


def test_canary_then_promote(ws, store):
    apply(ws, manifest("v1"), store)
    apply(ws, manifest("v2", V2_OPTIONS, pct=25), store)
    assert store.routing("qs") == Routing(stable="v1", candidate="v2", weight=25.0)
    result = apply(ws, manifest("v2", V2_OPTIONS, pct=100), store)
    assert [a.kind for a in result.executed] == ["promote"]
    assert result.built == 0
    assert store.routing("qs") == Routing(stable="v2", candidate=None, weight=0.0)
    reasons = [r["reason"] for r in store.journal("qs")]
    assert reasons == ["FirstVersion", "WeightChanged", "RolloutComplete"]
    assert all(r["manifestDigest"] for r in store.journal("qs"))


def test_alias_never_points_at_a_version_that_failed_a_gate(ws, store):
    apply(ws, manifest("v1"), store)
    result = apply(ws, manifest("v3", BAD_OPTIONS, pct=50), store)
    assert [r.passed for r in result.reports] == [False]
    routing = store.routing("qs")
    assert routing.stable == "v1" and routing.candidate is None and routing.weight == 0
    assert result.status["phase"] == "RolledBack"
    failed = [g for g in result.status["gates"] if not g["passed"]]
    assert failed and "< min" in failed[0]["message"] and "golden" in failed[0]["message"]
    # every routing record in the journal avoids v3, and the store refuses to route to it
    for record in store.journal("qs"):
        assert "v3" not in (record["to"]["stable"], record["to"]["candidate"])
    with pytest.raises(StoreError, match="failed its gates"):
        store.write_routing("qs", "qs", Routing(stable="v3"))
    with pytest.raises(ControllerError, match="failed its gates"):
        rollback(store, "qs", to="v3")
    # and reconciling the same manifest again neither rebuilds nor re-checks
    again = apply(ws, manifest("v3", BAD_OPTIONS, pct=50), store)
    assert (again.built, again.reports, again.executed) == (0, [], [])


def test_corpus_change_re_embeds_only_changed_documents(ws, store):
    apply(ws, manifest("v1"), store)
    corpus = ws / "data" / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["text"] += " An added sentence."
    lines[0] = json.dumps(doc)
    lines.append(json.dumps({"id": "new-doc", "title": "New", "text": "A brand new abstract."}))
    corpus.write_text("\n".join(lines) + "\n")
    result = apply(ws, manifest("v1"), store)
    assert result.built == 1 and result.embedded == 2
    assert store.routing("qs").stable == "v1.r2"
    meta = store.meta("qs", "v1.r2")
    assert meta["build"]["reusedFrom"] == "v1" and meta["build"]["reused"] == len(lines) - 2


def test_versions_beyond_history_keep_are_deleted(ws, store):
    for i, seed in enumerate([1, 2, 3, 4], start=1):
        apply(ws, manifest(f"v{i}", {"wordNgrams": 1, "seed": seed}, keep=2,
                           gates=[{"metric": "ndcg@10", "min": 0.2}]), store)
    assert [v.id for v in store.versions("qs")] == ["v3", "v4"]
    assert store.routing("qs").stable == "v4"


def test_manual_rollback_holds_until_the_manifest_changes(ws, store):
    apply(ws, manifest("v1"), store)
    apply(ws, manifest("v2", V2_OPTIONS), store)
    rollback(store, "qs")
    assert store.routing("qs").stable == "v1"
    held = apply(ws, manifest("v2", V2_OPTIONS), store)
    assert held.executed == [] and held.status["phase"] == "Paused"
    changed = apply(ws, manifest("v2", V2_OPTIONS, keep=4), store)
    assert [a.kind for a in changed.executed] == ["promote"]
    assert store.routing("qs") == Routing(stable="v2")


def test_staging_leftovers_are_not_versions(ws, store):
    apply(ws, manifest("v1"), store)
    (store.index_dir("qs") / "versions" / ".staging-v9-123").mkdir()
    assert [v.id for v in store.versions("qs")] == ["v1"]


def test_model_change_under_same_version_is_refused(ws, store):
    apply(ws, manifest("v1"), store)
    result = apply(ws, manifest("v1", V2_OPTIONS, model_version="v1"), store)
    assert result.plan.blocked == "IndexVersionImmutable"
    assert result.status["phase"] == "Stalled"
    assert store.routing("qs").stable == "v1" and result.built == 0


def test_a_corpus_revision_stores_only_what_changed_and_checks_like_a_full_build(ws, store, tmp_path):
    """#11 Disk: one copy of the vectors; a .rN reusing 99% of them adds <= 5% of a full copy."""
    apply(ws, manifest("v1"), store)
    v1 = store.version_dir("qs", "v1")
    assert not (v1 / "vectors.npy").exists()  # the Flat index is the only copy
    corpus = ws / "data" / "corpus.jsonl"
    lines = corpus.read_text().splitlines()
    for i in range(0, len(lines), 100):  # about 1% of the documents edited
        doc = json.loads(lines[i])
        doc["text"] += " An added sentence."
        lines[i] = json.dumps(doc)
    corpus.write_text("\n".join(lines) + "\n")
    apply(ws, manifest("v1"), store)
    rev = store.version_dir("qs", "v1.r2")
    assert (rev / "rows.npy").is_file()
    shared = {(p.stat().st_ino) for p in v1.iterdir()}
    vector_files = [p for p in rev.iterdir() if p.suffix in (".faiss", ".npy", ".npz") and p.is_file()]
    added = sum(p.stat().st_size for p in vector_files if p.stat().st_ino not in shared)
    assert added <= 0.05 * len(lines) * 384 * 4, added
    fresh = Store(tmp_path / "fresh")
    apply(ws, manifest("v1"), fresh)  # the same corpus built from scratch
    got = store.verdict("qs", "v1.r2")["report"]["metrics"]
    want = fresh.verdict("qs", "v1")["report"]["metrics"]
    assert got == pytest.approx(want, abs=1e-9)
