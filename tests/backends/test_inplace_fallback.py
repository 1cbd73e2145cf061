"""A backend without ``in_place_update`` (Qdrant, pgvector for now): refresh: inPlace falls back to a
full rebuild that the plan explains, reuses every unchanged vector, and is promoted after its checks."""

from __future__ import annotations

import json

from controller.backends import get_backend
from controller.engine.reconcile import reconcile_index
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.helpers import QUICKSTART, manifest, workspace, write_manifest


def test_qdrant_refresh_in_place_falls_back_to_a_rebuild_and_says_why(tmp_path, qdrant_backend):
    ws = workspace(tmp_path)
    store = Store(tmp_path / "store")
    doc = manifest("v1", reembed={"refresh": "inPlace"})
    doc["spec"]["index"] = {"version": "v1", "metric": "cosine", "backend": {"type": "qdrant"}}
    [loaded] = load_manifests(write_manifest(ws, doc))
    reconcile_index(loaded, store)
    corpus = ws / "data" / "corpus.jsonl"
    present = {json.loads(l)["id"] for l in corpus.read_text().splitlines()}
    extra = [l for l in (QUICKSTART / "data" / "corpus.jsonl").read_text().splitlines()
             if json.loads(l)["id"] not in present][:5]
    corpus.write_text(corpus.read_text() + "\n".join(extra) + "\n")
    [loaded] = load_manifests(write_manifest(ws, doc))
    result = reconcile_index(loaded, store)
    build = result.plan.actions[0]
    assert build.kind == "build" and "full rebuild instead of an in-place refresh" in build.message
    assert "backend qdrant cannot update a version in place" in build.message
    assert [a.kind for a in result.executed] == ["build", "check", "promote"]
    assert result.embedded == 5 and store.routing("qs").stable == "v1.r2"
    assert get_backend("qdrant").get_alias("qs") == "v1.r2"  # the native alias followed
