"""Impressions and feedback round-trip through the event log into `controller events`; crash safety."""

from __future__ import annotations

import json
import signal
import time

import pytest

from controller.store import events as E
from tests.serve.conftest import controller

N = 1000


def _feedback_for(i: int, hits: list[dict]) -> list[dict]:
    """A deterministic click pattern whose counts the test can predict exactly."""
    events = []
    if i % 2 == 0 and hits:
        rank = i % min(3, len(hits)) + 1
        events.append({"type": "click", "docId": hits[rank - 1]["id"], "position": rank})
    if i % 4 == 0:
        events.append({"type": "dwell", "docId": hits[0]["id"], "dwellMs": float(i)})
    if i % 5 == 0:
        events.append({"type": "skip", "docId": hits[-1]["id"]})
    if i % 50 == 0:
        events.append({"type": "complaint"})
    return events


def test_feedback_round_trip_exact_counts(fresh_store, serve, capsys):
    _, store = fresh_store
    server = serve(store, "--flush-window", "0.2")
    expected: dict[str, dict] = {}
    for i in range(N):
        r = server.search(query=f"vitamin {i % 7}", k=5, key=f"u{i}")
        assert r.status_code == 200
        body = r.json()
        e = expected.setdefault(body["version"], {"queries": 0, "clicks": 0, "rr": 0.0, "skips": 0,
                                                  "complaints": 0, "dwell": []})
        e["queries"] += 1
        events = _feedback_for(i, body["hits"])
        for ev in events:
            if ev["type"] == "click":
                e["clicks"] += 1
                e["rr"] += 1 / ev["position"]
            elif ev["type"] == "dwell":
                e["dwell"].append(ev["dwellMs"])
        e["skips"] += any(ev["type"] == "skip" for ev in events)
        e["complaints"] += any(ev["type"] == "complaint" for ev in events)
        if events:
            fb = server.client.post("/v1/indexes/quickstart/feedback",
                                    json={"requestId": body["requestId"], "events": events})
            assert fb.status_code == 200 and fb.json()["accepted"] == len(events)
            if i % 10 == 0:  # a client's retry: answered, and counted once (the counts below stay exact)
                again = server.client.post("/v1/indexes/quickstart/feedback",
                                           json={"requestId": body["requestId"], "events": events * 3})
                assert again.status_code == 200
                assert again.json() == {"requestId": body["requestId"], "accepted": 0, "duplicates": 3 * len(events)}
    metrics = server.client.get("/metrics").text
    assert "controller_serve_feedback_total" in metrics
    server.stop()  # SIGTERM: the last window is flushed on shutdown
    capsys.readouterr()
    assert controller("events", "quickstart", "--store", str(store), "-o", "json") == 0
    summary = json.loads(capsys.readouterr().out)["versions"]
    assert set(summary) == set(expected)
    assert sum(v["queries"] for v in summary.values()) == N
    for version, e in expected.items():
        got = summary[version]
        q = e["queries"]
        assert got["queries"] == q and got["clicks"] == e["clicks"]
        assert got["ctr"] == round(e["clicks"] / q, 6)  # at most one click per request here
        assert got["clicksPerQuery"] == round(e["clicks"] / q, 6)
        assert got["mrr"] == pytest.approx(e["rr"] / q, abs=1e-6)
        assert got["skipRate"] == round(e["skips"] / q, 6)
        assert got["complaintRate"] == round(e["complaints"] / q, 6)
        assert got["dwellMeanMs"] == pytest.approx(sum(e["dwell"]) / len(e["dwell"]), abs=1e-3)
        assert got["zeroResultRate"] == 0.0 and got["errors"] == 0
        assert got["latencyMs"]["p50"] <= got["latencyMs"]["p95"] <= got["latencyMs"]["p99"]
    # the served query vectors fed the drift reservoir of each version's model
    assert list((store / "indexes" / "quickstart" / "queries").glob("*.npz"))
    capsys.readouterr()
    assert controller("events", "quickstart", "--store", str(store), "--since", "1h") == 0
    assert "v1" in capsys.readouterr().out


def test_sigkill_loses_at_most_the_flush_window(fresh_store, serve):
    _, store = fresh_store
    window = 0.3
    server = serve(store, "--flush-window", str(window))
    answered: list[tuple[float, str]] = []
    for i in range(400):
        r = server.search(query="bone health", k=3, key=f"k{i}")
        assert r.status_code == 200
        answered.append((time.time(), r.json()["requestId"]))
    killed_at = time.time()
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    logged = {e["requestId"] for e in E.read_events(store / "events", "quickstart") if e["type"] == "impression"}
    lost = [(t, rid) for t, rid in answered if rid not in logged]
    # only what was answered in the last window (plus one fsync's time) may be missing
    assert all(killed_at - t <= window + 0.5 for t, _ in lost), lost[:3]
    assert len(logged) >= len(answered) - len([1 for t, _ in answered if killed_at - t <= window + 0.5])
    # a torn last line (crash mid-write) is skipped, and a restarted server writes a new segment
    segment = E.segments(store / "events" / "quickstart")[-1]
    with open(segment, "ab") as handle:
        handle.write(b'{"type": "impression", "requestId": "torn')
    assert {e["requestId"] for e in E.read_events(store / "events", "quickstart")
            if e["type"] == "impression"} == logged
    again = serve(store)
    assert again.search(query="bone", key="x").status_code == 200
    again.stop()
    assert len(E.segments(store / "events" / "quickstart")) >= 2
    assert len([e for e in E.read_events(store / "events", "quickstart") if e["type"] == "impression"]) \
        == len(logged) + 1
