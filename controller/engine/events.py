"""Online signals per version from the service's event log (`controller events`).

Definitions (docs/serving.md):
  queries            impressions served by the version
  ctr                share of impressions with at least one click (CTR@k, k = the request's k)
  clicksPerQuery     clicks / queries
  mrr                mean over impressions of 1 / rank of the first click (0 without a click)
  dwell mean/median  over dwell events' dwellMs
  skipRate           share of impressions with at least one skip event
  complaintRate      share of impressions with at least one complaint
  zeroResultRate     share of impressions that returned no hit
  latency            p50/p95/p99 of the service's tookMs
  errors             error events attributed to the version (or to "-" when none was routed)
  interleaved        team-draft interleaved impressions whose candidate was the version: not in the
                     numbers above, since half of each list is the other version's (the interleaving
                     preference test of docs/rollouts.md judges them), as the online gates do
  role               the version's role in its latest impression (a promoted version is stable)
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from controller.core.online import click_rank
from controller.store import events as E

FEEDBACK_TYPES = ("click", "dwell", "skip", "complaint")


def summarize(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per-version summary of impressions, feedback and errors (pure: no I/O)."""
    impressions: dict[str, dict[str, Any]] = {}
    feedback: dict[str, list[dict[str, Any]]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    for r in records:
        kind = r.get("type")
        if kind == "impression":
            impressions[r["requestId"]] = r
        elif kind in FEEDBACK_TYPES:
            feedback[r.get("requestId", "")].append(r)
        elif kind == "error":
            errors[r.get("version") or "-"] += 1
    per: dict[str, dict[str, Any]] = {}
    for imp in impressions.values():
        v = per.setdefault(imp["version"], _empty(imp.get("role")))
        if imp.get("mode") == "interleave":
            v["interleaved"] += 1
            continue
        v["role"] = imp.get("role")  # records are in time order: the latest role wins
        v["queries"] += 1
        v["latency"].append(float(imp.get("tookMs") or 0.0))
        v["zero"] += not imp.get("ids")
        events = feedback.get(imp["requestId"], [])
        clicks = [e for e in events if e["type"] == "click"]
        v["clicks"] += len(clicks)
        v["clicked"] += bool(clicks)
        if clicks:
            v["rr"] += 1.0 / min(click_rank(e, imp) for e in clicks)
        v["skipped"] += any(e["type"] == "skip" for e in events)
        v["complained"] += any(e["type"] == "complaint" for e in events)
        v["dwell"] += [float(e["dwellMs"]) for e in events if e["type"] == "dwell" and e.get("dwellMs") is not None]
    out = {version: _finish(v, errors.pop(version, 0)) for version, v in sorted(per.items())}
    for version, n in sorted(errors.items()):
        out[version] = {**_finish(_empty(None), 0), "errors": n}
    return out


def _empty(role: str | None) -> dict[str, Any]:
    return {"role": role, "queries": 0, "clicks": 0, "clicked": 0, "rr": 0.0, "skipped": 0, "complained": 0,
            "zero": 0, "dwell": [], "latency": [], "interleaved": 0}


def _finish(v: dict[str, Any], errors: int) -> dict[str, Any]:
    q = v["queries"]

    def rate(x: float) -> float | None:
        return round(x / q, 6) if q else None

    lat = np.asarray(v["latency"], dtype=float)
    dwell = np.asarray(v["dwell"], dtype=float)
    return {
        "role": v["role"], "queries": q, "clicks": v["clicks"], "ctr": rate(v["clicked"]),
        "clicksPerQuery": rate(v["clicks"]), "mrr": rate(v["rr"]), "skipRate": rate(v["skipped"]),
        "complaintRate": rate(v["complained"]), "zeroResultRate": rate(v["zero"]),
        "dwellMeanMs": round(float(dwell.mean()), 3) if dwell.size else None,
        "dwellMedianMs": round(float(np.median(dwell)), 3) if dwell.size else None,
        "latencyMs": ({f"p{p}": round(float(np.percentile(lat, p)), 3) for p in (50, 95, 99)}
                      if lat.size else None),
        "errors": errors, "interleaved": v["interleaved"],
    }


def index_events(events_root: Path, name: str, *, since_s: float | None = None,
                 now: float | None = None) -> dict[str, dict[str, Any]]:
    """Summary of one index's events, optionally only the last ``since_s`` seconds."""
    since = None if since_s is None else (time.time() if now is None else now) - since_s
    return summarize(E.read_events(events_root, name, since=since))
