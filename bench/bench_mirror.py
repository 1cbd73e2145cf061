"""What mirroring a slow or failing candidate costs the stable's p99, against a baseline measured in the same run.

Setup: the quickstart data (no ../shared needed), three indexes in one store, served by one real
`controller serve` process (--no-record):
  qs     v1 stable, v2 candidate mirrored at 100% (setMirror: 100, then pause);
  base   v1 only: the unmirrored baseline;
  base2  v1 only: an A/A control, to show how far two identical indexes' p99s differ on this machine.
The candidate's query embedder is a real OpenAI-compatible server in its own process
(tests/serve/embedder_process.py) that sleeps 200 ms per query (`sleep200ms`) or answers 500 (`raises`).

One HTTP client (keep-alive http.client) sends the same query to qs, base and base2 in rotation, so all
three see the same bursts of machine noise. Printed per fault: p50 and p99 of each, the p99 ratio
qs/base (goal <= 1.10) and base2/base, each with a bootstrap 95% interval, and how many mirrored
queries the candidate ran in that time (from the `mirror` records of the event log).

A p99 over n requests is the (n/100)th slowest of them, so it is noisy: at 6,000 requests a side on
this 2-core machine the A/A ratio's bootstrap standard deviation was about 0.04. That is why this is a
benchmark with an interval and not a timed test (tests/serve/test_mirror.py checks the same path with a
margin that only a request path which waits for the candidate could fail).

Run: .venv/bin/python bench/bench_mirror.py [--requests 20000] [--faults sleep200ms raises]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from bench_serve import start_server  # this directory is on sys.path when a bench runs as a script

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "examples" / "quickstart"
QUERIES = ["protein folding", "cancer risk", "vitamin d", "gene expression", "immune response", "dna repair",
           "cell cycle", "blood pressure", "insulin", "antibodies"]
FAULTS = {"sleep200ms": ["--sleep", "0.2"], "raises": ["--fault", "500"]}
SIDES = ("qs", "base", "base2")
GOAL = 1.10


def controller(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "controller.cli.main", *args], check=True, cwd=REPO,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_embedder(port: int, fault: str | None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tests.serve.embedder_process", "--port", str(port),
                             "--dim", "32", *(FAULTS[fault] if fault else [])],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=20)


def manifest(name: str, version: str, model: dict, rollout: dict) -> dict:
    return {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": name},
            "spec": {"corpus": {"path": "data/corpus.jsonl", "idField": "id", "textFields": ["title", "text"]},
                     "model": model, "index": {"version": version, "factory": "Flat", "metric": "cosine"},
                     "rollout": rollout,
                     "checks": {"golden": {"queries": "data/queries.jsonl", "qrels": "data/qrels.tsv", "k": 10,
                                           "gates": [{"metric": "ndcg@10", "min": 0.0}]}}}}


def build_store(tmp: Path, embedder_port: int) -> Path:
    """qs (v1 + v2 mirrored at 100%), base and base2 (v1 only), reconciled by the real CLI."""
    ws = tmp / "ws"
    shutil.copytree(QUICKSTART / "data", ws / "data")
    store = tmp / "store"
    hashing = {"provider": "hashing", "name": "hashed-ngrams", "version": "1", "dim": 384,
               "options": {"wordNgrams": 1, "seed": 1}}
    http_model = {"provider": "http", "name": "fake", "version": "1", "dim": 32,
                  "options": {"baseUrl": f"http://127.0.0.1:{embedder_port}/v1", "batchSize": 64, "retries": 0}}
    docs = [manifest(name, "v1", hashing, {"percentage": 100}) for name in SIDES]
    docs.append(manifest("qs", "v2", http_model, {"steps": [{"setMirror": 100}, {"pause": {}}]}))
    for i, doc in enumerate(docs):
        path = ws / f"{i}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        controller("reconcile", str(path), "--store", str(store))
    routing = json.loads((store / "indexes" / "qs" / "routing.json").read_text())
    assert (routing["stable"], routing["candidate"], routing["mirror"]) == ("v1", "v2", 100.0), routing
    return store


def timed(port: int, n: int) -> dict[str, np.ndarray]:
    """n rounds of one query to each side, the order rotating per round; milliseconds per request."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took: dict[str, list[float]] = {side: [] for side in SIDES}
    headers = {"content-type": "application/json"}
    for i in range(n + len(QUERIES)):
        body = json.dumps({"query": f"{QUERIES[i % len(QUERIES)]} {i}", "k": 10})
        for side in SIDES[i % 3:] + SIDES[:i % 3]:
            started = time.perf_counter()
            conn.request("POST", f"/v1/indexes/{side}/search", body, headers)
            response = conn.getresponse()
            payload = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            if response.status != 200 or json.loads(payload)["version"] != "v1":
                raise RuntimeError(f"{side}: HTTP {response.status} {payload[:200]!r}")
            if i >= len(QUERIES):  # the first round of each query warms both paths
                took[side].append(elapsed)
    conn.close()
    return {side: np.asarray(values) for side, values in took.items()}


def p99_ratio(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, reps: int = 1000) -> tuple[float, float, float]:
    """p99(a)/p99(b) and its bootstrap 95% interval (each side resampled on its own)."""
    ratio = float(np.percentile(a, 99) / np.percentile(b, 99))
    boot = [np.percentile(rng.choice(a, len(a)), 99) / np.percentile(rng.choice(b, len(b)), 99) for _ in range(reps)]
    low, high = np.percentile(boot, [2.5, 97.5])
    return ratio, float(low), float(high)


def mirror_records(store: Path, since: float) -> list[dict]:
    out = []
    for segment in sorted((store / "events" / "qs").glob("*.jsonl")):
        for line in segment.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("type") == "mirror" and record.get("ts", 0) >= since:
                out.append(record)
    return out


def run_fault(store: Path, embedder_port: int, fault: str, n: int, rng: np.random.Generator) -> bool:
    embedder = start_embedder(embedder_port, fault)
    serve, port = start_server(store, ("--log-level", "error", "--no-record", "--flush-window", "0.2"))
    try:
        since = time.time()
        started = time.monotonic()
        took = timed(port, n)
        seconds = time.monotonic() - started
        time.sleep(0.5)  # the event log's flush window
        mirrored = mirror_records(store, since)
    finally:
        stop(serve)
        stop(embedder)
    failed = sum(1 for r in mirrored if r.get("error"))
    print(f"\n{fault}: {n} requests a side in {seconds:.0f} s; the candidate ran {len(mirrored)} mirrored queries "
          f"({failed} failed) meanwhile")
    for side in SIDES:
        print(f"  {side:6s} p50 {np.median(took[side]):.3f} ms  p99 {np.percentile(took[side], 99):.3f} ms")
    ratio, low, high = p99_ratio(took["qs"], took["base"], rng)
    aa, aa_low, aa_high = p99_ratio(took["base2"], took["base"], rng)
    ok = ratio <= GOAL
    print(f"  p99 mirrored / unmirrored  {ratio:.3f}  (95% {low:.3f}-{high:.3f})  goal <= {GOAL}: "
          f"{'met' if ok else 'NOT met'}")
    print(f"  p99 A/A control base2/base {aa:.3f}  (95% {aa_low:.3f}-{aa_high:.3f})")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=20000, help="requests a side per fault (default 20000)")
    p.add_argument("--faults", nargs="+", choices=sorted(FAULTS), default=list(FAULTS))
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's seed")
    args = p.parse_args()
    print(f"bench_mirror: {args.requests} requests a side, load average {os.getloadavg()[0]:.2f}")
    rng = np.random.default_rng(args.seed)
    embedder_port = free_port()  # fixed: the candidate's manifest names it
    with tempfile.TemporaryDirectory(prefix="bench-mirror-") as tmp:
        build_embedder = start_embedder(embedder_port, None)
        try:
            store = build_store(Path(tmp), embedder_port)
        finally:
            stop(build_embedder)
        results = [run_fault(store, embedder_port, fault, args.requests, rng) for fault in args.faults]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
