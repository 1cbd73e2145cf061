"""Golden metrics: one small class per metric behind a registry, like the drift statistics.

Every metric reads the ranked grade matrix (queries x ranks, trec_eval order)
and returns one value per query, trec_eval-exactly:

* relevance is grade >= 1 (trec_eval's default relevance_level); grades <= 0
  give no gain;
* nDCG uses linear gain and a log2(rank + 1) discount; the ideal ranking is
  built from every qrels entry with grade > 0, including documents absent
  from the run or the corpus;
* a query whose judgements are all <= 0 scores 0 (ideal DCG and the recall
  denominator are 0);
* precision@k divides by k even when the run is shallower.

The names (and their trec_eval aliases) come from controller.manifest.defaults, the one list the
manifest schema also uses; adding a metric is one entry there plus one class here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from controller.errors import InvalidInput
from controller.manifest.defaults import GOLDEN_METRIC_ALIASES, GOLDEN_METRICS

from .join import FlatQrels


@dataclass(frozen=True)
class Ranked:
    """What every metric reads: grades in rank order, the ideal gains and the relevant counts."""

    rel: np.ndarray       # (n_queries, depth) int64 grades in trec_eval rank order, 0-padded
    ideal: np.ndarray     # (n_queries, <=k) positive grades sorted descending, 0-padded
    num_rel: np.ndarray   # (n_queries,) grades >= 1 per query (recall denominator)


class Metric(Protocol):
    name: str

    def compute(self, k: int, ranked: Ranked) -> np.ndarray:
        """One value per query at cutoff k."""
        ...


def _discounts(k: int) -> np.ndarray:
    """1 / log2(rank + 1) for ranks 1..k."""
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


class NDCG:
    name = "ndcg"

    def compute(self, k: int, ranked: Ranked) -> np.ndarray:
        top = ranked.rel[:, :k]
        disc = _discounts(k)
        dcg = (np.maximum(top, 0) * disc[: top.shape[1]]).sum(axis=1)
        best = ranked.ideal[:, :k]
        idcg = (best * disc[: best.shape[1]]).sum(axis=1)
        return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


class Recall:
    name = "recall"

    def compute(self, k: int, ranked: Ranked) -> np.ndarray:
        found = (ranked.rel[:, :k] >= 1).sum(axis=1).astype(np.float64)
        return np.divide(found, ranked.num_rel, out=np.zeros_like(found), where=ranked.num_rel > 0)


class Precision:
    name = "precision"

    def compute(self, k: int, ranked: Ranked) -> np.ndarray:
        return (ranked.rel[:, :k] >= 1).sum(axis=1) / float(k)


class MRR:
    name = "mrr"

    def compute(self, k: int, ranked: Ranked) -> np.ndarray:
        hits = ranked.rel[:, :k] >= 1
        first = hits.argmax(axis=1)
        return np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)


class HitRate:
    name = "hitrate"

    def compute(self, k: int, ranked: Ranked) -> np.ndarray:
        return (ranked.rel[:, :k] >= 1).any(axis=1).astype(np.float64)


_IMPLEMENTATIONS: dict[str, Metric] = {m.name: m for m in (NDCG(), Recall(), Precision(), MRR(), HitRate())}
if set(_IMPLEMENTATIONS) != set(GOLDEN_METRICS):  # the manifest schema and the scorer must agree
    raise ImportError(f"golden metric registry {sorted(_IMPLEMENTATIONS)} differs from "
                      f"controller.manifest.defaults.GOLDEN_METRICS {sorted(GOLDEN_METRICS)}")

#: Canonical name -> implementation, in the manifest's order.
REGISTRY: dict[str, Metric] = {name: _IMPLEMENTATIONS[name] for name in GOLDEN_METRICS}
METRICS: tuple[str, ...] = tuple(REGISTRY)
_ALIASES: dict[str, str] = GOLDEN_METRIC_ALIASES
_METRIC_RE = re.compile(r"^\s*([a-z_]+)\s*[@_.]\s*(\d+)\s*$", re.IGNORECASE)


def parse_metric(name: str) -> tuple[str, int]:
    """'ndcg@10' / 'p@10' / 'success@5' -> (canonical metric, cutoff)."""
    match = _METRIC_RE.match(str(name))
    metric = _ALIASES.get(match.group(1).lower()) if match else None
    k = int(match.group(2)) if match else 0
    if metric is None or k < 1:
        valid = ", ".join(f"{m}@k" for m in METRICS)
        aliases = ", ".join(f"{a}@k" for a in _ALIASES if a not in REGISTRY)
        raise InvalidInput(
            f"unknown metric {str(name)[:40]!r}; valid metrics are {valid} (k >= 1; aliases {aliases})",
            field="metrics")
    return metric, k


def metric_name(metric: str, k: int) -> str:
    """Canonical key used in Evaluation.metrics, e.g. 'ndcg@10'."""
    return f"{metric}@{k}"


def compute(metric: str, k: int, ranked: Ranked) -> np.ndarray:
    """One per-query vector; ``rel`` may be narrower than k (a shallow run): missing ranks add nothing."""
    if ranked.rel[:, :k].size == 0:  # empty run: nothing retrieved
        return np.zeros(ranked.rel.shape[0])
    return REGISTRY[metric].compute(k, ranked)


def ideal_gains(flat: FlatQrels, n_q: int, k: int) -> np.ndarray:
    """(n_q, <=k) positive grades of each query sorted descending, 0-padded.

    Only as wide as the longest list of positive grades, so ndcg@1000 does
    not allocate 1000 columns for queries with five relevant documents.
    """
    pos = flat.rels > 0
    qidx, rels = flat.qidx[pos], flat.rels[pos]
    order = np.lexsort((-rels, qidx))
    qidx, rels = qidx[order], rels[order]
    starts = np.searchsorted(qidx, np.arange(n_q))
    rank = np.arange(qidx.size) - starts[qidx]
    keep = rank < k
    width = min(k, int(rank.max()) + 1 if rank.size else 0)
    ideal = np.zeros((n_q, width), dtype=np.int64)
    ideal[qidx[keep], rank[keep]] = rels[keep]
    return ideal
