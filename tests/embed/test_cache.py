"""The content-addressed embedding cache: files, crash tails, fingerprints, GC, and reconcile through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from controller.embed.cache import EmbeddingCache, collect_garbage, embed_through_cache, fingerprint_dir_name
from controller.engine.embedding import gc_embedding_cache
from controller.engine.backend import stored_vectors
from controller.engine.reconcile import reconcile_index
from controller.errors import StoreError
from controller.manifest.providers import capabilities
from controller.manifest.load import load_manifests
from controller.store.corpus import text_hash
from controller.store.fs import Store
from tests.embed.fake_openai import FakeEmbeddingServer
from tests.helpers import manifest, workspace, write_manifest

FP = {"provider": "hashing", "name": "m", "version": "1", "dim": 4, "normalize": True, "optionsHash": "abc"}


def rows(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


def hashes(texts):
    return [text_hash(t) for t in texts]


def test_put_then_get_across_writers(tmp_path):
    a, b = EmbeddingCache(tmp_path, FP), EmbeddingCache(tmp_path, FP)
    va, vb = rows(3), rows(2, seed=1)
    a.put(hashes(["x", "y", "z"]), va)
    b.put(hashes(["u", "v"]), vb)
    found, got = EmbeddingCache(tmp_path, FP).get(hashes(["v", "nope", "x", "z"]))
    assert found.tolist() == [True, False, True, True]
    np.testing.assert_array_equal(got, np.stack([vb[1], va[0], va[2]]))
    assert len(list((tmp_path / fingerprint_dir_name(FP)).glob("*.idx"))) == 2


def test_torn_tails_from_a_crash_are_ignored(tmp_path):
    cache = EmbeddingCache(tmp_path, FP)
    cache.put(hashes(["a", "b"]), rows(2))
    [idx] = cache.dir.glob("*.idx")
    f32 = idx.with_suffix(".f32")
    with open(f32, "ab") as h:   # rows written, crash before their hashes
        h.write(rows(1).tobytes())
    with open(idx, "ab") as h:   # a torn hash line
        h.write(b"0123")
    reopened = EmbeddingCache(tmp_path, FP)
    assert len(reopened) == 2
    with open(idx, "ab") as h:   # a complete hash line whose row is only half there
        h.write(b"456789abcdef\n")
    with open(f32, "r+b") as h:
        h.truncate(2 * 16 + 8)
    assert len(EmbeddingCache(tmp_path, FP)) == 2


def test_a_cache_directory_of_another_fingerprint_is_refused(tmp_path):
    cache = EmbeddingCache(tmp_path, FP)
    cache.put(hashes(["a"]), rows(1))
    (cache.dir / "fingerprint.json").write_text(json.dumps({**FP, "version": "2"}))
    with pytest.raises(StoreError, match="refusing to mix vectors of two models"):
        EmbeddingCache(tmp_path, FP).get(hashes(["a"]))


class Counting:
    """A reusable embedder that counts what it embeds."""

    capabilities = capabilities("hashing")

    def __init__(self, dim: int = 4, fail_after: int | None = None) -> None:
        self.dim, self.fingerprint, self.calls, self.fail_after = dim, {**FP, "dim": dim}, [], fail_after

    def embed_documents(self, ids, texts, progress=None):
        if self.fail_after is not None and sum(map(len, self.calls)) >= self.fail_after:
            raise RuntimeError("model crashed")
        self.calls.append(list(texts))
        return np.stack([np.full(self.dim, float(len(t)), dtype=np.float32) for t in texts])


def test_duplicates_are_embedded_once_and_a_failure_keeps_finished_chunks(tmp_path):
    texts = [f"text {i % 7}" for i in range(20)] + [f"other {i}" for i in range(30)]
    emb = Counting(fail_after=20)
    cache = EmbeddingCache(tmp_path, emb.fingerprint)
    with pytest.raises(RuntimeError):
        embed_through_cache(emb, cache, texts, texts, hashes(texts), chunk=10)
    assert sum(map(len, emb.calls)) == 20  # two chunks of 10 distinct texts finished and were cached
    emb.fail_after = None
    out, stats = embed_through_cache(emb, EmbeddingCache(tmp_path, emb.fingerprint), texts, texts,
                                     hashes(texts), chunk=10)
    assert sum(map(len, emb.calls)) == 37  # 7 + 30 distinct texts, each exactly once in total
    # cached: the 7 distinct "text k" (20 rows) and "other 0-12"; 17 "other" texts remained
    assert stats.to_dict() == {"hits": 20 + 13, "misses": 17, "embedded": 17}
    np.testing.assert_array_equal(out[:, 0], [float(len(t)) for t in texts])


def test_gc_keeps_what_kept_versions_use_and_recent_files(tmp_path):
    cache = EmbeddingCache(tmp_path / "cache", FP)
    cache.put(hashes(["keep", "drop"]), rows(2))
    now = max(p.stat().st_mtime for p in cache.dir.iterdir()) + 10
    used = {fingerprint_dir_name(FP): set(hashes(["keep"]))}
    assert collect_garbage(tmp_path, used, grace_seconds=3600, now=now) == {"removed": 0, "kept": 0}
    assert len(EmbeddingCache(tmp_path / "cache", FP)) == 2
    assert collect_garbage(tmp_path, used, grace_seconds=1, now=now) == {"removed": 1, "kept": 1}
    after = EmbeddingCache(tmp_path / "cache", FP)
    assert len(after) == 1 and hashes(["keep"])[0] in after
    # the compacted survivor is old data: a later collection without references drops it
    assert collect_garbage(tmp_path, {}, grace_seconds=1, now=now + 100)["removed"] == 1
    assert len(EmbeddingCache(tmp_path / "cache", FP)) == 0


# ---- reconcile through the cache, counted at a real HTTP server ----------------------------
def http_manifest(server: FakeEmbeddingServer, version: str, *, name: str = "qs", factory: str = "Flat",
                  keep: int = 3) -> dict:
    doc = manifest(version, name=name, factory=factory, keep=keep, model_version="1",
                   gates=[{"metric": "ndcg@10", "min": 0.0}])
    doc["spec"]["model"] = {"provider": "http", "name": "fake", "version": "1", "dim": server.dim,
                            "options": {"baseUrl": server.base_url, "documentPrefix": "passage: ",
                                        "queryPrefix": "query: ", "batchSize": 16}}
    return doc


def documents_embedded(server: FakeEmbeddingServer) -> int:
    return sum(n for text, n in server.embedded.items() if text.startswith("passage: "))


@pytest.fixture
def server():
    with FakeEmbeddingServer(dim=16) as srv:
        yield srv


def apply(ws: Path, doc: dict, store: Store, filename: str = "index.yaml"):
    [loaded] = load_manifests(write_manifest(ws, doc, filename))
    return reconcile_index(loaded, store)


def test_reuse_across_factories_corpus_edits_and_indexes(tmp_path, server):
    ws, store = workspace(tmp_path, n_docs=200), Store(tmp_path / "store")
    n = len((ws / "data" / "corpus.jsonl").read_text().splitlines())
    first = apply(ws, http_manifest(server, "v1"), store)
    assert documents_embedded(server) == n == first.embedded
    meta = store.meta("qs", "v1")
    assert meta["build"]["cache"] == {"hits": 0, "misses": n, "embedded": n}

    # v2 keeps v1's model, changes only the factory: nothing embedded
    apply(ws, http_manifest(server, "v2", factory="HNSW16"), store)
    assert documents_embedded(server) == n
    assert store.meta("qs", "v2")["build"]["embedded"] == 0

    # a second index over the same corpus and model: every vector from the cache
    second = apply(ws, http_manifest(server, "v1", name="other"), store, "other.yaml")
    assert documents_embedded(server) == n and second.embedded == 0
    assert store.meta("other", "v1")["build"]["cache"] == {"hits": n, "misses": 0, "embedded": 0}
    np.testing.assert_array_equal(stored_vectors(store, "other", "v1"),
                                  stored_vectors(store, "qs", "v1"))

    # changing 1% of the documents embeds exactly those
    lines = (ws / "data" / "corpus.jsonl").read_text().splitlines()
    changed = max(1, n // 100)
    for i in range(changed):
        doc = json.loads(lines[i]); doc["text"] += " (revised)"; lines[i] = json.dumps(doc)
    (ws / "data" / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    apply(ws, http_manifest(server, "v2", factory="HNSW16"), store)
    assert documents_embedded(server) == n + changed
    assert max(server.embedded.values()) == 1  # no (model, text) pair, golden queries included, twice


def test_store_gc_drops_cache_entries_no_kept_version_uses(tmp_path, server):
    ws, store = workspace(tmp_path, n_docs=50), Store(tmp_path / "store")
    apply(ws, http_manifest(server, "v1", keep=1), store)
    lines = (ws / "data" / "corpus.jsonl").read_text().splitlines()
    old_hash = store.hashes("qs", "v1")[0]
    doc = json.loads(lines[0]); doc["text"] = "an entirely new text"; lines[0] = json.dumps(doc)
    (ws / "data" / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    apply(ws, http_manifest(server, "v2", keep=1), store)
    assert [v.id for v in store.versions("qs")] == ["v2"]
    fingerprint = store.meta("qs", "v2")["fingerprint"]
    assert old_hash in EmbeddingCache.for_store(store.root, fingerprint)  # within the grace period
    report = gc_embedding_cache(store, grace_seconds=-1)  # every file counts as old
    cache = EmbeddingCache.for_store(store.root, fingerprint)
    assert report["kept"] == len(lines) == len(cache)  # golden-query entries are dropped too
    assert old_hash not in cache and all(h in cache for h in store.hashes("qs", "v2"))
