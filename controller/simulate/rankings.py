"""Rankings for the in-process simulator: exact cosine search and a seeded degraded model.

The degraded model is a real model made worse in a controlled, reproducible
way: the vectors projected to `dim` dimensions by a seeded Gaussian random
projection (Johnson-Lindenstrauss), then re-normalised. Fewer dimensions keep
less of the geometry, so nDCG falls. For small gaps, seeded Gaussian noise
added to the document vectors (not the queries) blurs the geometry a little;
nDCG falls smoothly with the noise's standard deviation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from controller.checks.golden.io import GoldenSet, load_golden
from controller.checks.golden.score import evaluate


def random_projection(vectors: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """`vectors` @ a seeded (d x dim) Gaussian matrix; the same seed projects docs and queries alike."""
    rng = np.random.default_rng(seed)
    matrix = rng.normal(size=(vectors.shape[1], dim)).astype(np.float32) / np.sqrt(dim)
    return vectors.astype(np.float32) @ matrix


def add_noise(vectors: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """`vectors` plus seeded N(0, sigma^2) noise in every coordinate."""
    rng = np.random.default_rng(seed)
    return vectors + rng.normal(scale=sigma, size=vectors.shape).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def exact_rankings(doc_ids: list[str], docs: np.ndarray, query_ids: list[str], queries: np.ndarray,
                   k: int = 10) -> dict[str, list[str]]:
    """Top-k doc ids per query by cosine similarity (exact; ties by doc order)."""
    scores = _unit(queries) @ _unit(docs).T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return {q: [doc_ids[j] for j in row] for q, row in zip(query_ids, top)}


def ndcg_at(golden: GoldenSet, rankings: dict[str, list[str]], k: int = 10) -> float:
    qids = list(rankings)
    docs = np.array([rankings[q] for q in qids], dtype=object)
    scores = np.tile(-np.arange(docs.shape[1], dtype=np.float32), (len(qids), 1))
    return evaluate(golden, qids, docs, scores, [f"ndcg@{k}"]).metrics[f"ndcg@{k}"]


def scifact_rankings(data_dir: Path, model: str = "all-minilm-l6-v2", *, k: int = 10,
                     project_to: int | None = None, doc_noise: float | None = None,
                     seed: int = 0) -> tuple[dict[str, list[str]], GoldenSet]:
    """Rankings of SciFact's 300 test queries from the shared vectors (optionally projected, or with noisy docs)."""
    data_dir = Path(data_dir)
    doc_ids = (data_dir / "doc_ids.txt").read_text().split()
    query_ids = (data_dir / "query_ids.txt").read_text().split()
    docs = np.load(data_dir / "vectors" / model / "docs.npy")
    queries = np.load(data_dir / "vectors" / model / "queries.npy")
    if project_to is not None:
        docs, queries = random_projection(docs, project_to, seed), random_projection(queries, project_to, seed)
    if doc_noise is not None:
        docs = add_noise(docs, doc_noise, seed)
    golden = load_golden(data_dir / "qrels" / "test.tsv", data_dir / "queries.jsonl")
    return exact_rankings(doc_ids, docs, query_ids, queries, k), golden


def both_orders(x: dict[str, list[str]], y: dict[str, list[str]], qrels: dict) -> tuple[dict, dict, dict]:
    """Stable and candidate rankings (and qrels) with each query present twice, once as (x, y) and once
    as (y, x): over a uniform query stream neither side is preferred, exactly, whatever x and y are.

    An A/A check for interleaving needs two different rankers of equal quality: with identical lists
    every draft gives the same list and the preference test has nothing to be wrong about.
    """
    qids = [q for q in x if q in y and q in qrels]
    stable = {**{f"{q}#xy": x[q] for q in qids}, **{f"{q}#yx": y[q] for q in qids}}
    candidate = {**{f"{q}#xy": y[q] for q in qids}, **{f"{q}#yx": x[q] for q in qids}}
    return stable, candidate, {f"{q}#{o}": qrels[q] for q in qids for o in ("xy", "yx")}
