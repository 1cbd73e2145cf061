"""Simulated users against the real search service (`controller serve`).

Each simulated user picks a golden query, POSTs /v1/indexes/{name}/search
with the query text and a routing key, reads the hits the service returned
(whichever version, or interleaved list, it routed to), decides clicks,
dwell, skip and complaint with the click model, and POSTs them to
/v1/indexes/{name}/feedback under the response's requestId. The service logs
impressions and feedback as it would for real users, so online gates read
exactly what they would read in production.

Only the standard library's HTTP client is used, so rehearsing gates needs no
extra install: ``python -m controller.simulate --url http://127.0.0.1:8080
--index scifact --qrels qrels.tsv --queries queries.jsonl -n 2000``.
"""

from __future__ import annotations

import json
import random
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.simulate.clicks import ClickModel, simulate
from controller.simulate.population import Population


@dataclass
class DriveStats:
    queries: int = 0
    clicks: int = 0
    failed: int = 0
    by_version: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"queries": self.queries, "clicks": self.clicks, "failed": self.failed,
                "byVersion": dict(self.by_version), "errors": self.errors[:5]}


def _post(url: str, body: dict[str, Any], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass
class SimulatedUsers:
    """Seeded users for one index of a running service."""

    base_url: str
    index: str
    queries: Mapping[str, str]  # query id -> text (golden queries with qrels)
    qrels: Mapping[str, Mapping[str, int]]
    model: ClickModel = ClickModel()
    seed: int = 0
    k: int = 10
    users: int = 1000  # distinct routing keys: a user keeps their version across queries
    timeout: float = 10.0
    #: users who differ (own click model, own share of the queries); None: `users` keys, all with `model`
    population: Population | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.people = self.population.draw(self.rng) if self.population is not None else None
        self.qids = sorted(q for q in self.qrels if q in self.queries)
        if not self.qids:
            raise ValueError("no golden query has both a text and judgements")
        self.base_url = self.base_url.rstrip("/")

    def one(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One search and its feedback; returns (search response, feedback events sent)."""
        qid = self.rng.choice(self.qids)
        if self.people is None:
            key, model = f"sim-user-{self.rng.randrange(self.users)}", self.model
        else:
            _, user = self.people.pick(self.rng)
            key, model = user.key, user.model
        hits = _post(f"{self.base_url}/v1/indexes/{self.index}/search",
                     {"query": self.queries[qid], "k": self.k, "key": key}, self.timeout)
        ranking = [h["id"] for h in hits.get("hits", [])]
        relevant = {d for d, g in self.qrels[qid].items() if g > 0}
        events = simulate(ranking, relevant, self.rng, model).feedback_events()
        if events:
            _post(f"{self.base_url}/v1/indexes/{self.index}/feedback",
                  {"requestId": hits["requestId"], "events": events}, self.timeout)
        return hits, events

    def run(self, n: int, progress: Callable[[int, int], None] | None = None) -> DriveStats:
        """`n` searches (each with its feedback); failures are counted, never raised."""
        stats = DriveStats()
        for i in range(n):
            try:
                hits, events = self.one()
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                stats.failed += 1
                stats.errors.append(str(exc))
                continue
            stats.queries += 1
            stats.clicks += sum(e["type"] == "click" for e in events)
            stats.by_version[hits.get("version", "?")] += 1
            if progress is not None and (i + 1) % 100 == 0:
                progress(i + 1, n)
        return stats
