"""Defaults and names that more than one layer needs, written once.

Pure constants: the manifest models, the planner, the gates and the checks
all read them from here, so a default cannot drift between two copies.
"""

from __future__ import annotations

#: Confidence of the paired bootstrap interval of a metric's drop (golden.confidence unset).
DEFAULT_CONFIDENCE = 0.95
#: maxDrop of the default gates when a golden set declares none.
DEFAULT_MAX_DROP = 0.02
#: Golden metrics (trec_eval definitions), canonical names.
GOLDEN_METRICS: tuple[str, ...] = ("ndcg", "recall", "mrr", "precision", "hitrate")
#: Spellings accepted for them (trec_eval and BEIR names) -> canonical name.
GOLDEN_METRIC_ALIASES: dict[str, str] = {
    "ndcg": "ndcg", "ndcg_cut": "ndcg",
    "recall": "recall", "r": "recall",
    "mrr": "mrr", "recip_rank": "mrr",
    "precision": "precision", "p": "precision",
    "hitrate": "hitrate", "hit_rate": "hitrate", "success": "hitrate",
}
#: Share of the exact top-K the ANN index returns (index loss, not model loss).
ANN_RECALL = "annRecall"
#: Always reported at the evaluation depth, gated or not.
REPORTED_METRICS: tuple[str, ...] = ("ndcg", "recall", "mrr")
#: Gate metric names the manifest accepts (NAME@K): the canonical names, two short forms, annRecall.
GATE_METRIC_NAMES: tuple[str, ...] = (*GOLDEN_METRICS, "p", "success", ANN_RECALL)
GATE_METRIC_PATTERN = r"^(" + "|".join(GATE_METRIC_NAMES) + r")@[1-9][0-9]*$"
#: Index names: a DNS-1123 label (CLI arguments, manifests, CRs and store directories alike).
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Version labels: letters, digits, - _ . inside; never a path separator or a leading dot.
VERSION_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
