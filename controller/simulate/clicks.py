"""A seeded, position-biased cascade click model on golden relevance judgements.

A simulated user scans the result list top-down. Rank r is examined with
probability examination(r) = 1 / r**eta (position bias). An examined document
is clicked with probability p_rel if it is relevant in the qrels, p_nonrel if
not, so a relevant document at rank r is clicked with p_rel x examination(r)
and a non-relevant one with p_nonrel x examination(r). After a click on a
relevant document the user is satisfied and stops with probability p_stop,
after a click on a non-relevant one with p_stop_nonrel (the cascade; both 0
make every rank independent). The named models of Hofmann, Whiteson and de
Rijke (2011), the usual ones for simulating interleaving, are in CLICK_MODELS.

Each click is followed by a dwell: log-normal around dwell_rel_ms on relevant
documents, dwell_nonrel_ms on others. A list without any click ends in one
skip event (abandonment); a list without any relevant document draws a
complaint with probability p_complaint.

Everything is driven by the caller's random.Random, so a seed reproduces the
same users exactly.
"""

from __future__ import annotations

import math
import random
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ClickModel:
    p_rel: float = 0.9
    p_nonrel: float = 0.1
    eta: float = 1.0
    p_stop: float = 0.5
    p_stop_nonrel: float = 0.0
    dwell_rel_ms: float = 30_000.0
    dwell_nonrel_ms: float = 5_000.0
    dwell_sigma: float = 0.5
    p_complaint: float = 0.05

    def __post_init__(self) -> None:
        for name in ("p_rel", "p_nonrel", "p_stop", "p_stop_nonrel", "p_complaint"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"ClickModel.{name} must be a probability in [0, 1], got {value!r}")
        if self.eta < 0 or self.dwell_rel_ms <= 0 or self.dwell_nonrel_ms <= 0 or self.dwell_sigma < 0:
            raise ValueError("ClickModel.eta and dwell_sigma must be >= 0 and the dwell medians > 0")

    def examination(self, rank: int) -> float:
        return 1.0 / rank**self.eta


@dataclass(frozen=True)
class Click:
    position: int  # 1-based
    doc_id: str
    dwell_ms: float


@dataclass(frozen=True)
class Interaction:
    clicks: list[Click] = field(default_factory=list)
    skipped: bool = False
    complained: bool = False

    @property
    def positions(self) -> list[int]:
        return [c.position for c in self.clicks]

    def feedback_events(self) -> list[dict[str, Any]]:
        """The body's ``events`` for POST /v1/indexes/{name}/feedback."""
        events: list[dict[str, Any]] = []
        for c in self.clicks:
            events.append({"type": "click", "docId": c.doc_id, "position": c.position})
            events.append({"type": "dwell", "docId": c.doc_id, "position": c.position,
                           "dwellMs": round(c.dwell_ms, 1)})
        if self.skipped:
            events.append({"type": "skip"})
        if self.complained:
            events.append({"type": "complaint"})
        return events


def simulate(ranking: Sequence[str], relevant: Container[str], rng: random.Random,
             model: ClickModel = ClickModel()) -> Interaction:
    """One user's clicks, dwells, skip and complaint on one result list."""
    clicks: list[Click] = []
    for rank, doc in enumerate(ranking, start=1):
        if rng.random() >= model.examination(rank):
            continue
        is_rel = doc in relevant
        if rng.random() >= (model.p_rel if is_rel else model.p_nonrel):
            continue
        median = model.dwell_rel_ms if is_rel else model.dwell_nonrel_ms
        clicks.append(Click(rank, doc, median * math.exp(model.dwell_sigma * rng.gauss(0.0, 1.0))))
        if rng.random() < (model.p_stop if is_rel else model.p_stop_nonrel):
            break
    any_relevant = any(doc in relevant for doc in ranking)
    complained = not any_relevant and rng.random() < model.p_complaint
    return Interaction(clicks=clicks, skipped=not clicks, complained=complained)


#: Hofmann, Whiteson, de Rijke (2011) click models (click and stop probabilities for relevant /
#: non-relevant documents), with this module's position bias on top (eta 1).
CLICK_MODELS = {
    "perfect": ClickModel(p_rel=1.0, p_nonrel=0.0, p_stop=0.0, p_stop_nonrel=0.0),
    "navigational": ClickModel(p_rel=0.95, p_nonrel=0.05, p_stop=0.9, p_stop_nonrel=0.2),
    "informational": ClickModel(p_rel=0.9, p_nonrel=0.4, p_stop=0.5, p_stop_nonrel=0.1),
    "almost random": ClickModel(p_rel=0.6, p_nonrel=0.4, p_stop=0.5, p_stop_nonrel=0.5),
}
