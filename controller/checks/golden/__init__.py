"""Golden-set quality checks: load judged queries, score a retrieval run.

The controller promotes or blocks an index version on retrieval quality, so
the numbers must be the ones the IR community reports: every metric is
trec_eval-exact (checked against pytrec_eval to 1e-9 in the tests),
including its tie-breaking and its handling of odd queries.

* io.py      parsing qrels (BEIR TSV or TREC, auto-detected) and queries.jsonl
* join.py    the vectorised hash join of a run to the qrels, trec_eval rank order
* metrics.py the metric registry (ndcg, recall, mrr, precision, hitrate)
* score.py   evaluate(): join, rank, score, caveats
"""

from __future__ import annotations

from .io import GoldenSet, golden_digest, load_golden
from .metrics import METRICS, REGISTRY, metric_name, parse_metric
from .score import Evaluation, evaluate

__all__ = ["METRICS", "REGISTRY", "Evaluation", "GoldenSet", "evaluate", "golden_digest", "load_golden",
           "metric_name", "parse_metric"]
