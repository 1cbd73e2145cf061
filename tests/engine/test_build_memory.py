"""A precomputed first build holds no second full-size copy of the vectors (issue 11: stream, normalise
in chunks from the memory map). Counted with tracemalloc, which sees numpy's buffers (FAISS's own
storage, the index itself, is C++ memory it does not count): bytes, not time."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np

from controller import api
from controller.embed import precomputed
from controller.engine import ahead

N, DIM = 16_000, 384


def test_a_precomputed_flat_build_never_holds_a_second_copy_of_the_vectors(tmp_path: Path, monkeypatch) -> None:
    # small chunks, so what a chunk holds is small beside the matrix even at this test's size
    monkeypatch.setattr(ahead, "ADD_CHUNK", 512)
    monkeypatch.setattr(precomputed, "CHUNK", 512)
    x = np.random.default_rng(0).standard_normal((N, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[::7] *= 3.0  # some rows not unit: those are normalised (in chunks) too
    np.save(tmp_path / "vectors.npy", x)
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"t {i}"}) + "\n"
                                                   for i in range(N)))
    doc = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "mem"},
           "spec": {"corpus": {"path": "corpus.jsonl", "idField": "id", "textFields": ["text"]},
                    "model": {"provider": "precomputed", "name": "m", "version": "1", "dim": DIM,
                              "options": {"vectors": "vectors.npy"}},
                    "index": {"version": "v1", "factory": "Flat", "metric": "cosine"},
                    "rollout": {"percentage": 100}}}
    manifest = tmp_path / "index.yaml"
    manifest.write_text(json.dumps(doc))
    del x
    tracemalloc.start()
    try:
        results = api.reconcile(manifest, tmp_path / "store")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert results[0].built == 1
    vectors = N * DIM * 4
    # a full copy would be 1x on its own (main before this change: 1.4x)
    assert peak < 0.75 * vectors, f"peak {peak / 1e6:.1f} MB of numpy/Python memory for {vectors / 1e6:.1f} MB"
