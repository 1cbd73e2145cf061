"""Agreement of top-k neighbour lists returned by two indexes for the same queries.

Used to compare an old and a new index (or exact vs approximate search) on
sample queries: Jaccard of the top-k id sets ignores order; rank-biased
overlap (RBO, Webber, Moffat & Zobel 2010) weights agreement at the top
more, with persistence p = 0.9 (the top 10 ranks carry ~65% of the weight).
For two lists truncated at the same depth k the extrapolated form is used:

    RBO_ext = (X_k / k) p^k + (1 - p) / p * sum_{d=1..k} (X_d / d) p^d

where X_d = |top-d of A  intersect  top-d of B|; it equals 1 for identical
lists and 0 for disjoint ones. Negative ids (search padding for "no result")
are ignored.
"""

from __future__ import annotations

import numpy as np

from controller.errors import InvalidInput

#: RBO persistence.
RBO_P: float = 0.9


def _as_ids(ids: np.ndarray, what: str, k: int) -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.integer):
        raise InvalidInput(f"{what} must be a (queries, k) integer id matrix, got {a.dtype} {a.shape}",
                           field=what, value=a.shape)
    if a.shape[1] < k:
        raise InvalidInput(f"{what} has {a.shape[1]} neighbours per query, fewer than k={k}",
                           field=what, value=a.shape)
    return a[:, :k]


def jaccard(a: list[int], b: list[int]) -> float:
    """|A & B| / |A | B| of two id lists; 1.0 when both are empty."""
    sa, sb = set(a), set(b)
    union = sa | sb
    return 1.0 if not union else len(sa & sb) / len(union)


def rbo(a: list[int], b: list[int], p: float = RBO_P) -> float:
    """Extrapolated rank-biased overlap of two ranked id lists (depth = the longer list)."""
    k = max(len(a), len(b))
    if k == 0:
        return 1.0
    seen_a: set[int] = set()
    seen_b: set[int] = set()
    overlap = 0
    total = 0.0
    for d in range(1, k + 1):
        x = a[d - 1] if d <= len(a) else None
        y = b[d - 1] if d <= len(b) else None
        if x is not None and y is not None and x == y:
            overlap += 1
        else:
            if x is not None:
                overlap += x in seen_b
            if y is not None:
                overlap += y in seen_a
        if x is not None:
            seen_a.add(x)
        if y is not None:
            seen_b.add(y)
        total += overlap / d * p ** d
    return float(overlap / k * p ** k + (1.0 - p) / p * total)


def neighbour_overlap(ids_a: np.ndarray, ids_b: np.ndarray, k: int) -> dict:
    """Mean Jaccard and RBO (p=0.9) of the top-k lists of the same queries.

    ``ids_a`` and ``ids_b`` are (queries, >=k) neighbour-id matrices in the
    same query order. Returns ``{"jaccard", "rbo", "k", "queries", "p"}``.
    """
    if int(k) < 1:
        raise InvalidInput(f"k must be a positive integer, got {k!r}", field="k", value=k)
    k = int(k)
    a, b = _as_ids(ids_a, "ids_a", k), _as_ids(ids_b, "ids_b", k)
    if a.shape[0] != b.shape[0]:
        raise InvalidInput(f"ids_a has {a.shape[0]} queries and ids_b {b.shape[0]}: they must list the same queries",
                           field="ids_b", value=b.shape)
    if a.shape[0] == 0:
        raise InvalidInput("no queries to compare", field="ids_a", value=a.shape)
    js, rs = [], []
    for row_a, row_b in zip(a, b):
        la = [int(i) for i in row_a if i >= 0]
        lb = [int(i) for i in row_b if i >= 0]
        js.append(jaccard(la, lb))
        rs.append(rbo(la, lb))
    return {"jaccard": float(np.mean(js)), "rbo": float(np.mean(rs)), "k": k,
            "queries": int(a.shape[0]), "p": RBO_P}
