"""SciFact scoring shared by the backend tests: the project's golden scorer on a backend's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.checks.golden import evaluate, load_golden

#: exact-search nDCG@10 on the 300 test queries (shared/data/scifact/README.md)
PUBLISHED = {"all-minilm-l6-v2": 0.6451, "multilingual-e5-small-q4": 0.6549}
DEPTH = 100


def ndcg_at_10(scifact: Path, rows: np.ndarray, scores: np.ndarray) -> float:
    golden = load_golden(scifact / "qrels" / "test.tsv", scifact / "queries.jsonl")
    doc_ids = np.array((scifact / "doc_ids.txt").read_text().split(), dtype=object)
    query_ids = (scifact / "query_ids.txt").read_text().split()
    run_docs = np.where(rows >= 0, doc_ids[np.maximum(rows, 0)], "")
    ev = evaluate(golden, query_ids, run_docs, scores, ["ndcg@10"], corpus_ids=set(doc_ids.tolist()))
    return ev.metrics["ndcg@10"]


def faiss_flat(docs: np.ndarray, queries: np.ndarray, k: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """The reference: FAISS IndexFlatIP on L2-normalised copies (cosine), as the FAISS backend builds Flat."""
    import faiss

    d = np.ascontiguousarray(docs, dtype=np.float32).copy()
    q = np.ascontiguousarray(queries, dtype=np.float32).copy()
    faiss.normalize_L2(d)
    faiss.normalize_L2(q)
    index = faiss.IndexFlatIP(d.shape[1])
    index.add(d)
    return index.search(q, k)


def overlap_at(ann: np.ndarray, exact: np.ndarray, k: int) -> float:
    """annRecall@k: share of the exact top-k the index returned."""
    hits = sum(len(set(a[:k]) & set(e[:k]) - {-1}) for a, e in zip(ann, exact))
    return hits / max(int((exact[:, :k] >= 0).sum()), 1)
