"""Simulated users drive a real `controller serve` process; the online gates read what it logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from controller.checks.golden.io import load_golden
from controller.core.online import OnlineGate
from controller.engine import online as EO
from controller.simulate.clicks import ClickModel
from controller.simulate.http import SimulatedUsers
from controller.store import events as E
from tests.serve.conftest import REPO, built_store, fresh_store, serve  # noqa: F401 - fixtures

N = 300


def test_simulated_users_through_the_service_feed_the_online_gates(fresh_store, serve):
    ws, store = fresh_store
    golden = load_golden(ws / "data" / "qrels.tsv", ws / "data" / "queries.jsonl")
    server = serve(store, "--flush-window", "0.2")
    since = time.time()
    users = SimulatedUsers(server.url, "quickstart", golden.query_texts, golden.qrels,
                           model=ClickModel(p_rel=0.9, p_nonrel=0.3), seed=4, users=200)
    stats = users.run(N)
    assert stats.failed == 0 and stats.queries == N
    assert set(stats.by_version) == {"v1", "v2"}  # the quickstart canary routes 25% to v2
    server.stop()
    until = time.time()
    gates = [OnlineGate("ctr", max_drop=0.5, min_samples=10), OnlineGate("latencyP50", max_increase=1000,
             min_samples=10)]
    v = EO.analyse(store, "quickstart", stable="v1", candidate="v2", since=since, until=until, gates=gates)
    ctr = v.gates[0]
    assert ctr["samples"] == {"stable": stats.by_version["v1"], "candidate": stats.by_version["v2"]}
    logged_clicks = sum(1 for r in E.read_events(E.events_root(store), "quickstart", since=since)
                        if r["type"] == "click")
    assert logged_clicks == stats.clicks > 0
    assert v.status in ("passed", "inconclusive", "failed") and v.gates[1]["value"] > 0


def test_the_cli_entry_drives_the_service(fresh_store, serve):
    ws, store = fresh_store
    server = serve(store, "--flush-window", "0.2")
    out = subprocess.run([sys.executable, "-m", "controller.simulate", "--url", server.url, "--index", "quickstart",
                          "--qrels", str(ws / "data" / "qrels.tsv"), "--queries", str(ws / "data" / "queries.jsonl"),
                          "-n", "20", "--seed", "1"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["queries"] == 20
    bad = subprocess.run([sys.executable, "-m", "controller.simulate", "--url", server.url, "--index", "quickstart",
                          "--qrels", str(ws / "missing.tsv"), "--queries", str(ws / "data" / "queries.jsonl")],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert bad.returncode == 2 and "missing.tsv" in bad.stderr and "Traceback" not in bad.stderr


def test_users_who_differ_reach_the_gates_as_users(fresh_store, serve):
    """--mixed-models --activity 1: 20 users, Zipf shares; the log keeps one unit per key, and the gate
    counts users, not searches."""
    ws, store = fresh_store
    server = serve(store, "--flush-window", "0.2")
    since = time.time()
    args = [sys.executable, "-m", "controller.simulate", "--url", server.url, "--index", "quickstart",
            "--qrels", str(ws / "data" / "qrels.tsv"), "--queries", str(ws / "data" / "queries.jsonl"),
            "-n", "200", "--seed", "2", "--users", "20", "--mixed-models", "--activity", "1"]
    out = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    server.stop()
    impressions = [r for r in E.read_events(E.events_root(store), "quickstart", since=since)
                   if r["type"] == "impression"]
    per_unit = sorted((sum(i["unit"] == u for i in impressions) for u in {i["unit"] for i in impressions}),
                      reverse=True)
    assert len(impressions) == 200 and None not in {i["unit"] for i in impressions}
    assert len(per_unit) <= 20 and per_unit[0] > 200 / 20 * 2  # the heaviest user sends far more than a 20th
    v = EO.analyse(store, "quickstart", stable="v1", candidate="v2", since=since, until=time.time(),
                   gates=[OnlineGate("ctr", max_drop=0.5, min_samples=1)])
    users = v.gates[0]["units"]
    assert users["stable"] + users["candidate"] == len(per_unit) < sum(v.gates[0]["samples"].values())
    for bad, why in ((["--activity", "-1"], "--activity must be a number >= 0, got -1.0"),
                     (["--activity", "nan"], "--activity must be a number >= 0, got nan"),
                     (["--users", "0", "--mixed-models"], "--users must be at least 1, got 0")):
        wrong = subprocess.run(args[:-5] + bad, capture_output=True, text=True, cwd=REPO, timeout=120)
        assert wrong.returncode == 2 and why in wrong.stderr and "Traceback" not in wrong.stderr
