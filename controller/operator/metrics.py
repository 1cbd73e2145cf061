"""Prometheus metrics of the operator, on their own registry (tests run several operators)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controller.engine.status import Phase

LABELS = ("namespace", "name")


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.reconciles = Counter("embeddingindex_reconcile_total", "Reconcile cycles by result.",
                                  (*LABELS, "result"), registry=r)
        self.duration = Histogram("embeddingindex_reconcile_duration_seconds", "Duration of one reconcile cycle.",
                                  LABELS, registry=r, buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900))
        self.weight = Gauge("embeddingindex_candidate_weight_percent",
                            "Share of queries (0-100) the candidate version serves.", LABELS, registry=r)
        self.gate_value = Gauge("embeddingindex_gate_value", "Last measured value of a gate.",
                                (*LABELS, "metric", "kind"), registry=r)
        self.gate_threshold = Gauge("embeddingindex_gate_threshold", "Threshold of a gate.",
                                    (*LABELS, "metric", "kind"), registry=r)
        self.gate_passed = Gauge("embeddingindex_gate_passed", "1 when the last check of a gate passed.",
                                 (*LABELS, "metric", "kind"), registry=r)
        self.phase = Gauge("embeddingindex_phase", "1 for the current phase of an index.",
                           (*LABELS, "phase"), registry=r)
        self.transitions = Counter("embeddingindex_transitions_total", "Lifecycle transitions (Events posted).",
                                   (*LABELS, "event"), registry=r)

    def observe_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.weight.labels(namespace, name).set(float(status.get("weight") or 0.0))
        for phase in Phase:
            self.phase.labels(namespace, name, phase.value).set(1.0 if status.get("phase") == phase else 0.0)
        for gate in status.get("gates") or []:
            key = (namespace, name, gate["metric"], gate["kind"])
            if gate.get("value") is not None:
                self.gate_value.labels(*key).set(float(gate["value"]))
            self.gate_threshold.labels(*key).set(float(gate["threshold"]))
            self.gate_passed.labels(*key).set(1.0 if gate.get("passed") else 0.0)

    def forget(self, namespace: str, name: str) -> None:
        """Drop the series of a deleted index so dashboards do not show it forever."""
        for metric in (self.weight, self.phase, self.gate_value, self.gate_threshold, self.gate_passed,
                       self.reconciles, self.duration, self.transitions):
            for labels in list(metric._metrics):  # prometheus_client keeps children by label tuple
                if labels[:2] == (namespace, name):
                    metric.remove(*labels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
