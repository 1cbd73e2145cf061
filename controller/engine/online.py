"""Online gates and interleaving verdicts from a window of the service's event log.

Reads the records `controller serve` writes (docs/serving.md): impressions,
feedback (click, dwell, skip, complaint), errors, and the rollout records of
progressive delivery:

* an interleaved impression is an impression with ``"mode": "interleave"``,
  ``"teams"`` (per position "stable" or "candidate"), ``"lists"`` (stable's and
  candidate's own results, ``{"stable": [...], "candidate": [...]}``) and ``version`` = the
  candidate; it counts only toward the interleaving test, never toward either
  arm's A/B metrics (its list is neither version's);
* a mirror record ``{"type": "mirror", requestId, version (candidate),
  stableVersion, ids, stableIds, tookMs, error}`` is a copy of a stable query
  answered by the candidate off the request path.

Per-sample values (one per impression unless said otherwise), so every metric
is a mean or a quantile the sequential tests of controller.core.online can judge:

  ctr / ctr@K      1 if the impression got a click (at rank <= K), else 0
  clicksPerQuery   number of click events
  mrr              1 / rank of the first click, 0 without a click
  dwellMean        one value per dwell event (dwellMs)
  skipRate, complaintRate, zeroResultRate   0/1 per impression
  errorRate        0 per impression, 1 per error event of the version that the service failed (5xx; a
                   refused request, 4xx, is the client's)
  latencyPxx       the impression's tookMs
  mirrorOverlap    RBO (p = 0.9) of candidate's vs stable's ids per mirrored query (= mirrorRbo)
  mirrorJaccard    Jaccard overlap per mirrored query
  mirrorErrorRate  1 if the mirrored call failed
  mirrorLatencyPxx candidate: the mirror's tookMs; stable: tookMs of the same requests' impressions
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller.core import interleave as IL
from controller.core import online as O
from controller.store import events as E

FEEDBACK = ("click", "dwell", "skip", "complaint")
#: (stable's, candidate's) per-sample units, or None for a side whose samples name none
Units = tuple[list[str | None] | None, list[str | None] | None]


@dataclass
class Window:
    """The records of one index in [since, until), grouped by request."""

    impressions: dict[str, dict[str, Any]] = field(default_factory=dict)
    feedback: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    mirrors: list[dict[str, Any]] = field(default_factory=list)


def collect(records: Iterable[dict[str, Any]], *, since: float | None = None, until: float | None = None) -> Window:
    w = Window()
    for r in records:
        ts = r.get("ts")
        if not isinstance(ts, (int, float)) or (since is not None and ts < since) or (until is not None and ts >= until):
            continue
        kind = r.get("type")
        if kind == "impression" and r.get("requestId"):
            w.impressions[r["requestId"]] = r
        elif kind in FEEDBACK:
            w.feedback[r.get("requestId", "")].append(r)
        elif kind == "error" and not _refused_request(r):
            w.errors[r.get("version") or "-"] += 1
        elif kind == "mirror":
            w.mirrors.append(r)
    return w


def _unit(imp: dict[str, Any]) -> str | None:
    """The impression's routing-key id; anything but a string (a hand-edited or foreign log) counts as none."""
    unit = imp.get("unit")
    return unit if isinstance(unit, str) else None


def _refused_request(record: dict[str, Any]) -> bool:
    """A 4xx: the client's request was refused (e.g. a vector of the stable's model sent to a candidate of
    another, 409), which says nothing about the version; errorRate counts what the service failed (5xx)."""
    status = record.get("status")
    return isinstance(status, int) and 400 <= status < 500


def _interleaved(imp: dict[str, Any]) -> bool:
    return imp.get("mode") == "interleave"


def _impression_value(metric: str, imp: dict[str, Any], events: list[dict[str, Any]]) -> float:
    clicks = [e for e in events if e.get("type") == "click"]
    if metric == "ctr":
        return float(bool(clicks))
    if metric.startswith("ctr@"):
        cutoff = int(metric[4:])
        return float(any(O.click_rank(e, imp) <= cutoff for e in clicks))
    if metric == "clicksPerQuery":
        return float(len(clicks))
    if metric == "mrr":
        return 1.0 / min(O.click_rank(e, imp) for e in clicks) if clicks else 0.0
    if metric == "skipRate":
        return float(any(e.get("type") == "skip" for e in events))
    if metric == "complaintRate":
        return float(any(e.get("type") == "complaint" for e in events))
    if metric == "zeroResultRate":
        return float(not imp.get("ids"))
    if O.quantile_of(metric) is not None:
        return float(imp.get("tookMs") or 0.0)
    raise ValueError(metric)  # unreachable for a validated gate


def arm_samples(w: Window, version: str, metric: str) -> list[float]:
    """One version's per-sample values of a non-mirror metric (interleaved impressions excluded)."""
    return arm_samples_and_units(w, version, metric)[0]


def arm_samples_and_units(w: Window, version: str, metric: str) -> tuple[list[float], list[str | None]]:
    """`arm_samples`, and per sample its unit: the routing key's id the impression logged, None without one."""
    imps = [imp for imp in w.impressions.values() if imp.get("version") == version and not _interleaved(imp)]
    if metric == "dwellMean":
        dwells = [(float(e["dwellMs"]), _unit(imp)) for imp in imps
                  for e in w.feedback.get(imp["requestId"], [])
                  if e.get("type") == "dwell" and isinstance(e.get("dwellMs"), (int, float))]
        return [x for x, _ in dwells], [u for _, u in dwells]
    units = [_unit(imp) for imp in imps]
    if metric == "errorRate":  # an error event has no impression, hence no unit: each is its own
        errors = w.errors.get(version, 0)
        return [0.0] * len(imps) + [1.0] * errors, units + [None] * errors
    return [_impression_value(metric, imp, w.feedback.get(imp["requestId"], [])) for imp in imps], units


def mirror_samples(w: Window, stable: str, candidate: str, metric: str) -> tuple[list[float], list[float]]:
    """(stable, candidate) values of a mirror metric."""
    mirrors = [m for m in w.mirrors if m.get("version") == candidate
               and m.get("stableVersion") in (None, stable)]
    ok = [m for m in mirrors if not m.get("error")]
    if metric in ("mirrorOverlap", "mirrorRbo"):
        return [], [O.rbo(m.get("ids") or [], m.get("stableIds") or []) for m in ok]
    if metric == "mirrorJaccard":
        return [], [O.jaccard(m.get("ids") or [], m.get("stableIds") or []) for m in ok]
    if metric == "mirrorErrorRate":
        return [], [float(bool(m.get("error"))) for m in mirrors]
    candidate_ms = [float(m["tookMs"]) for m in ok if isinstance(m.get("tookMs"), (int, float))]
    matched = [w.impressions[m["requestId"]] for m in mirrors if m.get("requestId") in w.impressions]
    stable_ms = [float(imp.get("tookMs") or 0.0) for imp in matched if imp.get("version") == stable]
    return stable_ms, candidate_ms


def gate_samples(w: Window, stable: str, candidate: str, metric: str) -> tuple[list[float], list[float], Units]:
    """(stable's values, candidate's values, (stable's units, candidate's units)) of one metric.

    A side's units are None when no sample came with a routing key; mirror metrics have none, since they
    measure the system on a copied query, not a user's behaviour."""
    if metric.startswith("mirror"):
        return (*mirror_samples(w, stable, candidate, metric), (None, None))
    (s, su), (c, cu) = (arm_samples_and_units(w, version, metric) for version in (stable, candidate))
    return s, c, (_keyed(su), _keyed(cu))


def _keyed(units: list[str | None]) -> list[str | None] | None:
    """None when no sample came with a routing key: then every sample is its own unit anyway."""
    return units if any(u is not None for u in units) else None


def interleave_tally(w: Window, candidate: str) -> O.InterleaveTally:
    """The preference test's tally over the candidate's interleaved impressions.

    An impression that records both source lists counts as P(candidate wins)
    and P(stable wins) over every draft that yields its list
    (`IL.win_probabilities`); one without them (older logs) by its realised
    teams.
    """
    tally = O.InterleaveTally()
    for imp in w.impressions.values():
        if not _interleaved(imp) or imp.get("version") != candidate:
            continue
        teams = imp.get("teams") or []
        positions = [p for p in (O.click_rank(e, imp) for e in w.feedback.get(imp["requestId"], [])
                                 if e.get("type") == "click") if 1 <= p <= len(teams)]
        tally.add(*_win_probabilities(imp, teams, positions), clicked=bool(positions), unit=_unit(imp))
    return tally


def _win_probabilities(imp: dict[str, Any], teams: list[str], positions: list[int]) -> tuple[float, float]:
    lists = imp.get("lists")
    if isinstance(lists, dict) and isinstance(lists.get("stable"), list) and isinstance(lists.get("candidate"), list):
        shares = IL.win_probabilities(lists["stable"], lists["candidate"], imp.get("ids") or [], positions)
        if shares is not None:
            return shares
    winner = IL.outcome(IL.credit(teams, positions))
    return float(winner == IL.CANDIDATE), float(winner == IL.STABLE)


def events_dir(root: str | Path) -> Path:
    """A store root (it has indexes/ or events/) means its events/; anything else is the events root."""
    root = Path(root)
    if (root / "indexes").is_dir() or (root / "events").is_dir():
        return E.events_root(root)
    return root


def read_window(root: str | Path, index: str, since: float, until: float) -> Window:
    return collect(E.read_events(events_dir(root), index, since=since), since=since, until=until)


def decide_window(w: Window, *, stable: str, candidate: str, gates: Sequence[O.OnlineGate], alpha: float = 0.05,
                  on_timeout: str | None = None, window: dict[str, float] | None = None) -> O.OnlineVerdict:
    """Every gate on one collected window (pure; what `analyse` does after reading)."""
    results = []
    for gate in gates:
        s, c, units = gate_samples(w, stable, candidate, gate.metric)
        results.append(O.decide(s, c, gate, alpha, on_timeout=on_timeout, units=units))
    return O.verdict(results, alpha, window=window)


def analyse(events_dir_or_store_root: str | Path, index: str, *, stable: str, candidate: str, since: float,
            until: float, gates: list[O.OnlineGate], alpha: float = 0.05,
            on_timeout: str | None = None) -> O.OnlineVerdict:
    """Candidate against stable on the events of [since, until): one decision per gate, then overall.

    Status is "failed" as soon as one gate's confidence sequence lies past its
    threshold, "passed" when every gate's lies on the good side, else
    "inconclusive" (not enough samples, or still straddling).
    """
    w = read_window(events_dir_or_store_root, index, since, until)
    return decide_window(w, stable=stable, candidate=candidate, gates=gates, alpha=alpha, on_timeout=on_timeout,
                         window={"since": since, "until": until})


def interleave_verdict(events_dir_or_store_root: str | Path, index: str, *, stable: str, candidate: str,
                       since: float, until: float, min_queries: int, alpha: float = 0.05, margin: float = 0.0,
                       on_timeout: str | None = None) -> O.OnlineVerdict:
    """The team-draft preference test on the candidate's interleaved impressions of [since, until)."""
    w = read_window(events_dir_or_store_root, index, since, until)
    v = O.interleave_decide(interleave_tally(w, candidate), min_queries, alpha, margin=margin, on_timeout=on_timeout)
    detail = {**(v.interleave or {}), "stable": stable, "candidate": candidate}
    return O.OnlineVerdict(status=v.status, interleave=detail, window={"since": since, "until": until}, alpha=alpha)
