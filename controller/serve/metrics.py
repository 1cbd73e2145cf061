"""Prometheus metrics of the service, on a registry of its own (one per app).

Label cardinality is bounded: index is a served index name (or "unknown"),
version one of the loaded versions (bounded by history.keep), role
stable/candidate, code an HTTP status class member; never a key or an id.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("index", "version", "role")
        self.requests = Counter("controller_serve_requests_total", "Search requests answered, by status code",
                                (*labels, "code"), registry=self.registry)
        self.errors = Counter("controller_serve_errors_total", "Search requests refused or failed",
                              (*labels, "code"), registry=self.registry)
        self.latency = Histogram("controller_serve_latency_seconds", "Search latency inside the service",
                                 labels, buckets=LATENCY_BUCKETS, registry=self.registry)
        self.feedback = Counter("controller_serve_feedback_total", "Feedback events accepted",
                                (*labels, "type"), registry=self.registry)
        self.events_written = Gauge("controller_serve_events_written", "Events written to the event log",
                                    registry=self.registry)
        self.events_failed = Gauge("controller_serve_events_write_errors", "Events the log could not write",
                                   registry=self.registry)
        self.loaded = Gauge("controller_serve_versions_loaded", "Versions kept loaded", registry=self.registry)
        self._served: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def served(self, index: str, version: str, role: str) -> tuple[Any, Any]:
        """The 200-requests counter and the latency histogram of one (index, version, role).

        Kept per label set: `labels()` takes the metric's lock and builds a key on every call,
        a cost paid twice per search otherwise. The label sets are bounded (see above).
        """
        children = self._served.get((index, version, role))
        if children is None:
            children = (self.requests.labels(index, version, role, "200"), self.latency.labels(index, version, role))
            self._served[(index, version, role)] = children
        return children
