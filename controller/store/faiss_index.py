"""FAISS index build and search, with the metric applied consistently.

cosine = inner product on L2-normalised copies (stored vectors keep their raw
norms for drift checks); ip = raw inner product; l2 = squared Euclidean, whose
scores are negated so that "higher is better" holds for every metric.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from controller.embed.base import l2_normalize
from controller.errors import InvalidInput, StoreError
from controller.progress import Progress, silent


def _prepare(x: np.ndarray, metric: str) -> np.ndarray:
    """What FAISS gets for `x`: a new normalised array for cosine (the caller's rows keep their norms)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return l2_normalize(x) if metric == "cosine" else x


def validate_factory(factory: str, dim: int, metric: str) -> None:
    """Fail early (before any write) on a factory string FAISS cannot parse."""
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    try:
        faiss.index_factory(dim, factory, faiss_metric)
    except RuntimeError as exc:
        raise InvalidInput(f"FAISS cannot build index_factory({dim}, {factory!r}): "
                           f"{str(exc).strip().splitlines()[-1]}",
                           field="spec.index.factory", value=factory) from exc


ADD_CHUNK = 20_000


def build_index(vectors: np.ndarray, factory: str, metric: str, *, seed: int = 1234,
                progress: Progress = silent) -> faiss.Index:
    """Train (when the factory needs it) and add every vector; row i = document i.

    Vectors are prepared (normalised for cosine) and added in chunks straight from the caller's
    array or memory map: no full-size copy beyond what training needs and the index itself.
    Normalisation is row-wise, so chunking gives bit-identical vectors to a whole-array pass.
    """
    faiss_metric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    dim = vectors.shape[1]
    try:
        index = faiss.index_factory(dim, factory, faiss_metric)
    except RuntimeError as exc:
        raise InvalidInput(f"FAISS cannot build index_factory({dim}, {factory!r}): "
                           f"{str(exc).strip().splitlines()[-1]}",
                           field="spec.index.factory", value=factory) from exc
    if not index.is_trained:
        _train(index, _prepare(vectors, metric), factory, seed)
    n = vectors.shape[0]
    for start in range(0, n, ADD_CHUNK):
        index.add(_prepare(vectors[start:start + ADD_CHUNK], metric))
        progress(min(start + ADD_CHUNK, n), n)
    return index


def _train(index: faiss.Index, data: np.ndarray, factory: str, seed: int) -> None:
    try:
        ivf = faiss.extract_index_ivf(index)
        ivf.cp.seed = seed
    except RuntimeError:
        pass  # not an IVF index: nothing to seed
    try:
        index.train(data)
    except RuntimeError as exc:
        raise InvalidInput(
            f"FAISS could not train {factory!r} on {data.shape[0]} vectors: "
            f"{str(exc).strip().splitlines()[-1]} (use fewer lists/centroids or a Flat/HNSW index)",
            field="spec.index.factory", value=factory) from exc


def search(index: faiss.Index, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows); rows are -1 where fewer than k results exist."""
    k = min(k, index.ntotal)
    scores, rows = index.search(_prepare(queries, metric), k)
    if metric == "l2":
        scores = -scores
    return scores, rows


def exact_search(vectors: np.ndarray, queries: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute force on the same vectors: the reference for ANN recall."""
    flat = build_index(vectors, "Flat", metric)
    return search(flat, queries, k, metric)


def save(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def load(path: Path) -> faiss.Index:
    try:
        return faiss.read_index(str(path))
    except RuntimeError as exc:
        raise StoreError(f"cannot read the FAISS index {path}: {exc}") from exc
