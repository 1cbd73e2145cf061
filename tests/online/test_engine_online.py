"""Online verdicts from an event log window: arms, feedback join, interleaving credit, mirror records."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from controller.core.online import FAILED, INCONCLUSIVE, PASSED, OnlineGate
from controller.engine import online as EO
from controller.store import events as E


def _write(root: Path, index: str, records: list[dict]) -> None:
    log = E.EventLog(root, window_s=3600)
    for r in records:
        log.append({"index": index, **r})
    log.close()


def _ab_records(n: int, p_stable: float, p_candidate: float, seed: int, t0: float = 1000.0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        version, p = ("v1", p_stable) if i % 2 else ("v2", p_candidate)
        rid = f"r{i}"
        out.append({"type": "impression", "ts": t0 + i, "requestId": rid, "version": version,
                    "role": "stable" if version == "v1" else "candidate", "k": 3, "ids": ["a", "b", "c"],
                    "tookMs": 10.0 + (i % 7)})
        if rng.random() < p:
            pos = rng.choice([1, 2, 3])
            out.append({"type": "click", "ts": t0 + i + 0.5, "requestId": rid, "version": version,
                        "docId": "abc"[pos - 1], "position": pos})
            out.append({"type": "dwell", "ts": t0 + i + 0.6, "requestId": rid, "version": version,
                        "docId": "abc"[pos - 1], "position": pos, "dwellMs": 1000.0 * pos})
    return out


def test_analyse_reads_the_window_and_fails_a_worse_candidate(tmp_path):
    store = tmp_path / "store"
    (store / "indexes").mkdir(parents=True)
    _write(E.events_root(store), "idx", _ab_records(6000, 0.6, 0.4, seed=1))
    gates = [OnlineGate("ctr", max_drop=0.02), OnlineGate("latencyP50", max_increase=50),
             OnlineGate("dwellMean", max_drop=5000, min_samples=50)]
    v = EO.analyse(store, "idx", stable="v1", candidate="v2", since=1000.0, until=7000.0, gates=gates)
    ctr, lat, dwell = v.gates
    assert v.status == FAILED and ctr["decision"] == FAILED
    assert ctr["samples"] == {"stable": 3000, "candidate": 3000}
    assert ctr["value"] == pytest.approx(0.4, abs=0.03) and ctr["baseline"] == pytest.approx(0.6, abs=0.03)
    assert lat["decision"] == PASSED and dwell["samples"]["candidate"] > 1000
    assert v.to_json()["window"] == {"since": 1000.0, "until": 7000.0}


def test_window_limits_and_an_events_dir_work_too(tmp_path):
    _write(tmp_path, "idx", _ab_records(400, 0.5, 0.5, seed=2))
    gate = OnlineGate("ctr", max_drop=0.02, min_samples=10)
    v = EO.analyse(tmp_path, "idx", stable="v1", candidate="v2", since=1000.0, until=1100.0, gates=[gate])
    assert v.gates[0]["samples"] == {"stable": 50, "candidate": 50}
    empty = EO.analyse(tmp_path, "idx", stable="v1", candidate="v2", since=5000.0, until=6000.0, gates=[gate])
    assert empty.status == INCONCLUSIVE and empty.gates[0]["reason"] == "notEnoughSamples"


def test_click_metrics_per_impression():
    recs = [
        {"type": "impression", "ts": 1, "requestId": "a", "version": "v1", "ids": ["x", "y", "z"], "tookMs": 5},
        {"type": "click", "ts": 2, "requestId": "a", "docId": "z"},  # position from the served list
        {"type": "click", "ts": 2, "requestId": "a", "docId": "y", "position": 2},
        {"type": "impression", "ts": 1, "requestId": "b", "version": "v1", "ids": [], "tookMs": 7},
        {"type": "skip", "ts": 2, "requestId": "b"},
        {"type": "complaint", "ts": 2, "requestId": "b"},
        {"type": "error", "ts": 2, "version": "v1"},
        {"type": "error", "ts": 2, "version": "v1", "status": 500},
        # refused requests are the client's: a stable-model vector sent to a candidate of another model
        {"type": "error", "ts": 2, "version": "v1", "status": 409},
        {"type": "error", "ts": 2, "version": "v1", "status": 422},
    ]
    w = EO.collect(recs)
    values = {m: EO.arm_samples(w, "v1", m) for m in
              ("ctr", "ctr@1", "ctr@2", "clicksPerQuery", "mrr", "skipRate", "complaintRate", "zeroResultRate",
               "errorRate", "latencyP99")}
    assert values == {"ctr": [1.0, 0.0], "ctr@1": [0.0, 0.0], "ctr@2": [1.0, 0.0], "clicksPerQuery": [2.0, 0.0],
                      "mrr": [0.5, 0.0], "skipRate": [0.0, 1.0], "complaintRate": [0.0, 1.0],
                      "zeroResultRate": [0.0, 1.0], "errorRate": [0.0, 0.0, 1.0, 1.0], "latencyP99": [5.0, 7.0]}


def _interleaved(rid: str, teams: list[str], clicks: list[int], ts: float = 10.0) -> list[dict]:
    ids = [f"d{i}" for i in range(len(teams))]
    recs = [{"type": "impression", "ts": ts, "requestId": rid, "version": "v2", "role": "candidate",
             "mode": "interleave", "teams": teams, "ids": ids, "tookMs": 3.0}]
    recs += [{"type": "click", "ts": ts + 1, "requestId": rid, "docId": ids[p - 1], "position": p} for p in clicks]
    return recs


def test_interleave_verdict_credits_clicks_to_teams_and_keeps_them_out_of_ab(tmp_path):
    S, C = "stable", "candidate"
    recs = []
    for i in range(60):
        recs += _interleaved(f"c{i}", [S, C, S, C], [2])  # the candidate's doc is clicked
    for i in range(10):
        recs += _interleaved(f"s{i}", [C, S, C, S], [2])  # the stable's doc is clicked
    for i in range(30):
        recs += _interleaved(f"t{i}", [S, C, S, C], [1, 2] if i % 2 else [])  # ties
    _write(tmp_path, "idx", recs)
    v = EO.interleave_verdict(tmp_path, "idx", stable="v1", candidate="v2", since=0, until=100, min_queries=50)
    d = v.to_json()["interleave"]
    assert (d["wins"], d["ties"], d["clicked"], d["queries"]) == ({"stable": 10, "candidate": 60}, 15, 85, 100)
    assert v.status == PASSED and d["candidate"] == "v2"
    ab = EO.analyse(tmp_path, "idx", stable="v1", candidate="v2", since=0, until=100,
                    gates=[OnlineGate("ctr", max_drop=0.0, min_samples=1)])
    assert ab.gates[0]["samples"] == {"stable": 0, "candidate": 0}  # interleaved lists are neither arm's
    few = EO.interleave_verdict(tmp_path, "idx", stable="v1", candidate="v2", since=0, until=100, min_queries=500)
    assert few.status == INCONCLUSIVE


def test_an_impression_with_its_source_lists_is_credited_over_every_draft_giving_its_list(tmp_path):
    # both rankers put x then y first: either team could have contributed x, so a click on it is no vote
    S, C = "stable", "candidate"
    recs = []
    for i in range(40):
        recs += _interleaved(f"x{i}", [S, C, C], [1])
        recs[-2]["ids"] = ["x", "y", "c"]
        recs[-2]["lists"] = {"stable": ["x", "y", "s"], "candidate": ["x", "y", "c"]}
        recs[-1]["docId"] = "x"
    _write(tmp_path, "idx", recs)
    d = EO.interleave_verdict(tmp_path, "idx", stable="v1", candidate="v2", since=0, until=100,
                              min_queries=10).to_json()["interleave"]
    assert d["wins"] == {"stable": 20.0, "candidate": 20.0} and d["clicked"] == 40
    assert d["decision"] == INCONCLUSIVE
    # the same impressions without their lists: the realised team (stable) takes every vote
    for r in recs:
        r.pop("lists", None)
    _write(tmp_path / "old", "idx", recs)
    d = EO.interleave_verdict(tmp_path / "old", "idx", stable="v1", candidate="v2", since=0, until=100,
                              min_queries=10).to_json()["interleave"]
    assert d["wins"] == {"stable": 40, "candidate": 0} and d["decision"] == FAILED


def test_mirror_metrics(tmp_path):
    recs = []
    for i in range(200):
        rid = f"m{i}"
        recs.append({"type": "impression", "ts": 5.0, "requestId": rid, "version": "v1", "ids": list("abcde"),
                     "tookMs": 10.0})
        recs.append({"type": "mirror", "ts": 5.1, "requestId": rid, "version": "v2", "stableVersion": "v1",
                     "ids": list("abcxy") if i % 10 else [], "stableIds": list("abcde"),
                     "tookMs": 30.0 + i % 5, "error": "boom" if i % 10 == 0 else None})
    _write(tmp_path, "idx", recs)
    gates = [OnlineGate("mirrorOverlap", min=0.5, min_samples=50), OnlineGate("mirrorJaccard", min=0.5,
             min_samples=50), OnlineGate("mirrorErrorRate", max=0.2, min_samples=50),
             OnlineGate("mirrorLatencyP50", max_increase=5, min_samples=50)]
    v = EO.analyse(tmp_path, "idx", stable="v1", candidate="v2", since=0, until=10, gates=gates)
    by = {g["metric"]: g for g in v.gates}
    assert by["mirrorOverlap"]["samples"]["candidate"] == 180  # failed mirrors have no overlap
    assert 0.5 < by["mirrorOverlap"]["value"] < 0.9 and by["mirrorOverlap"]["decision"] == PASSED
    assert by["mirrorJaccard"]["value"] == pytest.approx(3 / 7)
    assert by["mirrorJaccard"]["decision"] == FAILED
    assert by["mirrorErrorRate"]["value"] == pytest.approx(0.1)
    assert by["mirrorLatencyP50"]["decision"] == FAILED and by["mirrorLatencyP50"]["baseline"] == 10.0
    assert json.dumps(v.to_json())  # JSON-able (no infinities)
