"""#14 item 7: in-place refresh under the same model, through reconcile on a real store with real FAISS.

Adding 100, deleting 50 and changing 5 documents updates the serving index by rows: the embedder
sees only the 105 new or changed texts, nothing is trained or built afresh, and search answers
(document ids and scores to 1e-6) equal a full rebuild's on the same final corpus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from controller.backends import faiss as FB
from controller.core.types import Routing
from controller.embed.hashing import HashingEmbedder
from controller.engine import backend as B
from controller.engine import checks as C
from controller.engine.reconcile import reconcile_index
from controller.errors import InvalidInput
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import QUICKSTART, manifest, write_manifest

IN_PLACE = {"refresh": "inPlace"}
# deleting 50 of ~350 documents is intended here: spec.corpus.maxRemoved would stop it otherwise
CORPUS = {"path": "data/corpus.jsonl", "idField": "id", "textFields": ["title", "text"], "maxRemoved": 0.2}


def apply(ws: Path, doc: dict, store: Store, **kw):
    [loaded] = load_manifests(write_manifest(ws, doc))
    return reconcile_index(loaded, store, **kw)


def edit_corpus(ws: Path, *, add: int, delete: int, change: int) -> dict[str, set[str]]:
    """Append `add` quickstart documents not in the corpus, drop `delete` unjudged ones, edit `change`."""
    corpus = ws / "data" / "corpus.jsonl"
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    judged = {l.split("\t")[1] for l in (ws / "data" / "qrels.tsv").read_text().splitlines()[1:]}
    present = {d["id"] for d in docs}
    spare = [json.loads(l) for l in (QUICKSTART / "data" / "corpus.jsonl").read_text().splitlines()]
    added = [d for d in spare if d["id"] not in present][:add]
    assert len(added) == add
    unjudged = [d["id"] for d in docs if d["id"] not in judged]
    deleted = set(unjudged[:delete])
    changed = set(unjudged[delete:delete + change])
    out = []
    for d in docs:
        if d["id"] in deleted:
            continue
        if d["id"] in changed:
            d = {**d, "text": d["text"] + " A sentence added in this edit."}
        out.append(d)
    out += added
    corpus.write_text("".join(json.dumps(d) + "\n" for d in out))
    return {"added": {d["id"] for d in added}, "deleted": deleted, "changed": changed,
            "texts": {f"{d['title']} {d['text']}" for d in out if d["id"] in changed or d["id"] in
                      {a["id"] for a in added}}}


@pytest.fixture
def counted(monkeypatch):
    """Texts the model embeds, and calls into the backend's build (writer/training) paths."""
    seen: dict[str, list] = {"texts": [], "build": []}
    embed = HashingEmbedder.embed_documents

    def counting(self, ids, texts, *a, **kw):
        seen["texts"].extend(texts)
        return embed(self, ids, texts, *a, **kw)

    monkeypatch.setattr(HashingEmbedder, "embed_documents", counting)
    for name in ("create_version", "create_version_on_trained", "create_version_sharing"):
        original = getattr(FB.FaissBackend, name)

        def wrapper(self, *a, _name=name, _original=original, **kw):
            seen["build"].append(_name)
            return _original(self, *a, **kw)

        monkeypatch.setattr(FB.FaissBackend, name, wrapper)
    train = FB._train

    def counting_train(*a, **kw):
        seen["build"].append("train")
        return train(*a, **kw)

    monkeypatch.setattr(FB, "_train", counting_train)
    return seen


def answers(store: Store, version: str, queries: np.ndarray, k: int = 10) -> tuple[list[list[str]], np.ndarray]:
    """Top-k document ids and scores of a version (rows mapped through its own ids.json)."""
    ids = store.ids("qs", version)
    with B.opened(store, "qs", version) as handle:
        scores, rows = handle.search(queries, k)
    return [[ids[r] for r in row] for row in rows], scores


def golden_vectors(ws: Path) -> np.ndarray:
    texts = [json.loads(l)["text"] for l in (ws / "data" / "queries.jsonl").read_text().splitlines()]
    m = manifest("v1")["spec"]["model"]
    embedder = HashingEmbedder(m["dim"], True, m["options"], {"provider": "hashing"})
    rng = np.random.default_rng(5)  # and random directions, which rank the whole corpus
    return np.concatenate([embedder.embed_queries(texts, texts), rng.normal(size=(20, m["dim"])).astype(np.float32)])


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_add_100_delete_50_change_5_refreshes_in_place_and_answers_like_a_full_rebuild(
        ws, store, tmp_path, counted, factory, monkeypatch):
    # IVF searches one list of four (nprobe 1) and loses recall on this small corpus: lower gates
    gates = None if factory == "Flat" else [{"metric": "ndcg@10", "min": 0.2, "maxDrop": 0.15}]
    doc = manifest("v1", factory=factory, reembed=IN_PLACE, corpus=CORPUS, gates=gates)
    apply(ws, doc, store)
    assert store.routing("qs").stable == "v1"
    edit = edit_corpus(ws, add=100, delete=50, change=5)
    counted["texts"].clear(), counted["build"].clear()

    dry = apply(ws, doc, store, dry_run=True)
    assert [(a.kind, a.reason) for a in dry.plan.actions] == [
        ("refresh", "RefreshedInPlace"), ("check", "ChecksPending"), ("promote", "RefreshedInPlace")]
    assert "+100 added, 5 changed, -50 removed" in dry.plan.actions[0].message

    evaluated: list[str] = []
    golden_run = C._golden_run
    monkeypatch.setattr(C, "_golden_run", lambda s, n, version, *a, **k: evaluated.append(version) or
                        golden_run(s, n, version, *a, **k))
    result = apply(ws, doc, store)
    assert [a.kind for a in result.executed] == ["refresh", "check", "promote"]
    # golden metrics recomputed on the refreshed index; v1's stored evaluation is read back
    assert evaluated == ["v1.r2"]
    # only the new and changed texts reached the model; nothing was built, trained or re-added
    assert sorted(counted["texts"]) == sorted(edit["texts"]) and len(counted["texts"]) == 105
    assert counted["build"] == []
    assert store.routing("qs") == Routing(stable="v1.r2")
    last = store.journal("qs")[-1]
    assert last["reason"] == "RefreshedInPlace" and "+100 added, 5 changed, -50 removed" in last["message"]
    meta = store.meta("qs", "v1.r2")
    assert meta["refresh"] | {"fullBuildAt": 0} == {"from": "v1", "added": 100, "changed": 5, "removed": 50,
                                                   "refreshes": 1, "fullBuild": "v1", "fullBuildAt": 0}
    assert meta["build"]["embedded"] == 105 and meta["build"]["inPlace"]
    # the golden gates ran on the refreshed index
    assert result.reports and result.reports[0].version == "v1.r2" and result.reports[0].passed

    ids = store.ids("qs", "v1.r2")
    final = [json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    assert sorted(ids) == sorted(final) and len(set(ids)) == len(ids)
    # hashes beside the rows stay consistent: the same (id, hash) pairs as the corpus
    fresh = Store(tmp_path / "fresh")
    apply(ws, manifest("v1", factory=factory, corpus=CORPUS, gates=gates), fresh)  # the final corpus built from scratch
    want = dict(zip(fresh.ids("qs", "v1"), fresh.hashes("qs", "v1")))
    assert dict(zip(ids, store.hashes("qs", "v1.r2"))) == want
    # the raw vectors beside the index are the full rebuild's, bit for bit, row by row
    order = [fresh.ids("qs", "v1").index(i) for i in ids]
    assert np.array_equal(B.stored_vectors(store, "qs", "v1.r2"), B.stored_vectors(fresh, "qs", "v1")[order])

    queries = golden_vectors(ws)
    if factory == "Flat":
        reference = (fresh, "v1")
    else:  # a full IVF build trains new centroids: compare with a rebuild on the same training instead
        reference = (store, rebuild_on_training(store, ws, factory))
    got_ids, got_scores = answers(store, "v1.r2", queries)
    want_ids, want_scores = answers(*reference, queries)
    assert got_ids == want_ids
    np.testing.assert_allclose(got_scores, want_scores, atol=1e-6)


def rebuild_on_training(store: Store, ws: Path, factory: str) -> str:
    """A version `full` holding the final corpus in corpus order, built on v1's trained IVF structure."""
    from controller.backends.base import BackendSettings

    refreshed = dict(zip(store.ids("qs", "v1.r2"), B.stored_vectors(store, "qs", "v1.r2")))
    final = [json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    meta = {**store.meta("qs", "v1.r2"), "label": "full", "created": "9999-01-01T00:00:00Z"}
    meta.pop("refresh")
    backend = FB.FaissBackend()

    def fill(location: Path) -> None:
        ref = B.version_ref(store, "qs", "v1.r2", meta)
        ref = type(ref)(ref.index, "full", ref.dim, ref.metric, ref.fingerprint, location)
        writer = FB.FaissBackend.create_version_on_trained(backend, ref, BackendSettings("faiss", {"factory": factory}),
                                                           B.version_ref(store, "qs", "v1"))
        writer.add(np.stack([refreshed[i] for i in final]))
        writer.finish()

    store.write_version("qs", "full", fill=fill, ids=final, hashes=["x"] * len(final), meta=meta)
    return "full"


def test_hnsw_falls_back_to_a_rebuild_and_the_plan_says_why(ws, store, counted):
    doc = manifest("v1", factory="HNSW16", reembed=IN_PLACE)
    apply(ws, doc, store)
    edit_corpus(ws, add=10, delete=5, change=0)
    result = apply(ws, doc, store)
    build = result.plan.actions[0]
    assert (build.kind, build.reason) == ("build", "CorpusChanged")
    assert "cannot remove vectors" in build.message and "HNSW" in build.message
    assert [a.kind for a in result.executed] == ["build", "check", "promote"]
    assert store.routing("qs").stable == "v1.r2" and "refresh" not in store.meta("qs", "v1.r2")


def test_rebuild_after_a_count_of_refreshes(ws, store, counted):
    doc = manifest("v1", reembed={"refresh": "inPlace", "rebuildAfter": 2})
    apply(ws, doc, store)
    kinds = []
    for _ in range(3):
        edit_corpus(ws, add=3, delete=2, change=1)
        result = apply(ws, doc, store)
        kinds.append((result.executed[0].kind, result.executed[0].reason))
    assert kinds == [("refresh", "RefreshedInPlace"), ("refresh", "RefreshedInPlace"), ("build", "RebuildDue")]
    assert "2 in-place refreshes since the full build v1 (spec.reembed.rebuildAfter is 2)" in result.plan.actions[0].message
    assert store.meta("qs", "v1.r3")["refresh"]["refreshes"] == 2
    assert "refresh" not in store.meta("qs", "v1.r4")  # a full build starts a new chain
    edit_corpus(ws, add=3, delete=2, change=1)
    again = apply(ws, doc, store)
    assert again.executed[0].kind == "refresh"
    assert store.meta("qs", store.routing("qs").stable)["refresh"]["fullBuild"] == "v1.r4"


def test_rebuild_after_a_duration_since_the_full_build(ws, store, counted):
    doc = manifest("v1", reembed={"refresh": "inPlace", "rebuildAfter": "1h"})
    apply(ws, doc, store)
    edit_corpus(ws, add=3, delete=2, change=1)
    [loaded] = load_manifests(write_manifest(ws, doc))
    from controller.engine.reconcile import Hooks
    import time

    later = apply(ws, doc, store, dry_run=True, hooks=Hooks(clock=lambda: time.time() + 7200))
    assert later.plan.actions[0].reason == "RebuildDue" and "(spec.reembed.rebuildAfter is 1h)" in later.plan.actions[0].message
    now = apply(ws, doc, store, dry_run=True)
    assert now.plan.actions[0].kind == "refresh"


@pytest.mark.parametrize("value", [0, -3, "7w", "soon", True, 1.5])
def test_rebuild_after_is_validated_naming_the_field_and_value(ws, value):
    doc = manifest("v1", reembed={"refresh": "inPlace", "rebuildAfter": value})
    with pytest.raises(InvalidInput) as err:
        load_manifests(write_manifest(ws, doc))
    text = str(err.value)
    assert "spec.reembed.rebuildAfter" in text and repr(value) in text and "\n" not in text


def test_rebuild_after_without_in_place_is_refused(ws):
    with pytest.raises(InvalidInput, match=r"spec\.reembed.*rebuildAfter 3 applies to in-place refreshes"):
        load_manifests(write_manifest(ws, manifest("v1", reembed={"rebuildAfter": 3})))


def test_a_refresh_that_fails_its_gates_is_not_promoted(ws, store):
    doc = manifest("v1", reembed=IN_PLACE)
    apply(ws, doc, store)
    # delete every judged document: the golden metrics of the refreshed index collapse
    corpus = ws / "data" / "corpus.jsonl"
    judged = {l.split("\t")[1] for l in (ws / "data" / "qrels.tsv").read_text().splitlines()[1:]}
    corpus.write_text("".join(l + "\n" for l in corpus.read_text().splitlines()
                              if json.loads(l)["id"] not in judged))
    result = apply(ws, doc, store)
    assert [a.kind for a in result.executed][:1] == ["refresh"]
    assert not result.reports[0].passed
    assert store.routing("qs").stable == "v1"
    assert store.verdict("qs", "v1.r2")["verdict"] == "failed"


def test_an_interrupted_refresh_leaves_the_serving_version_and_the_next_reconcile_converges(
        ws, store, monkeypatch):
    doc = manifest("v1", factory="IVF4,Flat", reembed=IN_PLACE, gates=[{"metric": "ndcg@10", "min": 0.2}])
    apply(ws, doc, store)
    assert store.routing("qs").stable == "v1"
    v1 = store.version_dir("qs", "v1")
    before = {p.name: p.read_bytes() for p in v1.iterdir() if p.is_file()}
    edit_corpus(ws, add=20, delete=10, change=2)
    original = FB.FaissBackend.refresh_version

    def dies_after_writing(self, ref, *a, **kw):
        original(self, ref, *a, **kw)  # every file written into the staging directory, then the crash
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(FB.FaissBackend, "refresh_version", dies_after_writing)
    with pytest.raises(KeyboardInterrupt):
        apply(ws, doc, store)
    assert store.routing("qs").stable == "v1" and [v.id for v in store.versions("qs")] == ["v1"]
    assert {p.name: p.read_bytes() for p in v1.iterdir() if p.is_file()} == before  # serving files untouched
    monkeypatch.setattr(FB.FaissBackend, "refresh_version", original)
    result = apply(ws, doc, store)
    assert [a.kind for a in result.executed] == ["refresh", "check", "promote"]
    assert store.routing("qs").stable == "v1.r2"
    final = [json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()]
    assert sorted(store.ids("qs", "v1.r2")) == sorted(final)
    assert not [p for p in (store.index_dir("qs") / "versions").iterdir() if p.name.startswith(".")]


def test_a_refreshed_version_is_not_taken_for_corpus_order_by_a_later_build(ws, store):
    """A new index version of the same model reuses the refreshed rows by (id, hash), not by position."""
    doc = manifest("v1", reembed=IN_PLACE)
    apply(ws, doc, store)
    edit_corpus(ws, add=10, delete=5, change=2)
    apply(ws, doc, store)
    apply(ws, manifest("v2", model_version="v1", reembed=IN_PLACE, factory="HNSW16"), store)
    v2 = dict(zip(store.ids("qs", "v2"), B.stored_vectors(store, "qs", "v2")))
    r2 = dict(zip(store.ids("qs", "v1.r2"), B.stored_vectors(store, "qs", "v1.r2")))
    assert store.meta("qs", "v2")["build"]["embedded"] == 0
    assert all(np.array_equal(v2[i], r2[i]) for i in r2)


@pytest.mark.parametrize("compare", ["changed", "all"])
def test_corpus_drift_of_the_new_documents_turns_a_trained_refresh_into_a_full_build(ws, store, counted, compare):
    gates = [{"metric": "ndcg@10", "min": 0.2, "maxDrop": 0.3}]
    drift = {"metrics": [{"metric": "cosineShift", "max": 1e-9}], "retrain": True, "compare": compare}
    doc = manifest("v1", factory="IVF4,Flat", reembed=IN_PLACE, gates=gates,
                   checks={**manifest("v1", gates=gates)["spec"]["checks"], "corpusDrift": drift})
    apply(ws, doc, store)
    edit_corpus(ws, add=20, delete=10, change=2)
    counted["build"].clear()
    result = apply(ws, doc, store)
    assert result.plan.actions[0].kind == "refresh"  # planned in place; the drift is measured on execution
    meta = store.meta("qs", "v1.r2")
    assert "refresh" not in meta and meta["corpusDrift"]["assessment"]["retrain"]
    assert meta["corpusDrift"]["compared"] == (22 if compare == "changed" else meta["corpus"]["documents"])
    assert "train" in counted["build"]  # retrained on the new corpus, as corpusDrift.retrain asks
    assert store.routing("qs").stable == "v1.r2"


def test_no_corpus_drift_keeps_the_refresh_in_place_and_records_the_training_it_kept(ws, store, counted):
    gates = [{"metric": "ndcg@10", "min": 0.2, "maxDrop": 0.3}]
    drift = {"metrics": [{"metric": "cosineShift", "max": 10.0}], "retrain": True}
    doc = manifest("v1", factory="IVF4,Flat", reembed=IN_PLACE, gates=gates,
                   checks={**manifest("v1", gates=gates)["spec"]["checks"], "corpusDrift": drift})
    apply(ws, doc, store)
    edit_corpus(ws, add=20, delete=10, change=2)
    counted["build"].clear()
    apply(ws, doc, store)
    meta = store.meta("qs", "v1.r2")
    assert meta["refresh"]["added"] == 20 and counted["build"] == []
    assert meta["corpusDrift"]["trainedOn"] == "v1" and meta["corpusDrift"]["compared"] == 22
    assert not meta["corpusDrift"]["assessment"]["drifted"]


def test_deleting_only_embeds_nothing_and_removes_the_rows(ws, store, counted):
    doc = manifest("v1", reembed=IN_PLACE)
    apply(ws, doc, store)
    edit = edit_corpus(ws, add=0, delete=5, change=0)
    counted["texts"].clear()
    result = apply(ws, doc, store)
    assert [a.kind for a in result.executed] == ["refresh", "check", "promote"]
    assert counted["texts"] == [] and result.embedded == 0
    ids = store.ids("qs", "v1.r2")
    assert not set(ids) & edit["deleted"] and len(ids) == len(store.ids("qs", "v1")) - 5
    assert "+0 added, 0 changed, -5 removed" in store.journal("qs")[-1]["message"]


def test_the_search_service_picks_up_a_refresh_like_an_alias_switch(ws, store):
    from controller.engine.serving import VersionPool, search

    doc = manifest("v1", reembed=IN_PLACE)
    apply(ws, doc, store)
    pool = VersionPool(store)
    pool.refresh()
    edit = edit_corpus(ws, add=5, delete=3, change=0)
    added = sorted(edit["added"])[0]
    new_doc = next(json.loads(l) for l in (ws / "data" / "corpus.jsonl").read_text().splitlines()
                 if json.loads(l)["id"] == added)
    query = f"{new_doc['title']} {new_doc['text']}"
    before = search(pool.routed("qs"), text=query, k=5)
    assert before.version == "v1" and added not in [h.id for h in before.hits]
    apply(ws, doc, store)
    assert pool.refresh()  # the routing record changed: the refreshed version is loaded and routed
    after = search(pool.routed("qs"), text=query, k=5)
    assert after.version == "v1.r2" and after.hits[0].id == added
    assert not set(h.id for h in after.hits) & edit["deleted"]
