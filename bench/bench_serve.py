"""Cost of serving a search over HTTP relative to raw in-process `index.search`, measured in one run.

Setup: SciFact (../shared/data/scifact or $SCIFACT_DIR), the all-MiniLM-L6-v2 precomputed vectors in a
Flat cosine version built by `controller reconcile`; queries are the 300 test query vectors
(queries.npy), cycled. A real `controller serve` process on a loopback port.

Measured:
  raw        faiss `index.search` of one (normalised) query on the index the pool loaded, in this process
  pool       `engine.serving.search` (the `controller query` and `controller serve` path: route by the
             same routing keys the served traffic sends, check the model and the vector, normalise,
             search, map rows to ids, a request id), timed alternately with raw on the same queries
             and k (the machine's load moves both alike); --rounds rounds of 3000 pairs, the ratio
             reported is the median round's (goal <= 1.1x); the 300 routing keys repeat, as a
             returning user's do, so their buckets are remembered; one more round with every key new
             shows what a first-time key costs (hashed)
  serial     one HTTP client, one request at a time            -> served p50 - raw p50 (goal <= 2 ms)
  loaded     N requests at C concurrent connections (processes x threads of http.client) -> QPS (goal >= 500)
  switch     the same load while `controller reconcile` promotes v2 (same model, HNSW32) and
             `controller rollback` returns to v1: failed requests (goal 0), p99 during vs steady (goal <= 3x)

Run: .venv/bin/python bench/bench_serve.py [--requests 20000] [--concurrency 16] [--rounds 3] [--in-process-only]
The load generator shares the machine's cores with the server, so QPS is a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
SCIFACT = Path(os.environ.get("SCIFACT_DIR", REPO.parent / "shared" / "data" / "scifact"))
MODEL = "all-minilm-l6-v2"


def manifest(version: str, factory: str) -> dict:
    v = SCIFACT / "vectors" / MODEL
    return {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "scifact"},
            "spec": {"corpus": {"path": str(SCIFACT / "corpus.jsonl"), "idField": "_id",
                                "textFields": ["title", "text"]},
                     "model": {"provider": "precomputed", "name": MODEL, "version": "1", "dim": 384,
                               "options": {"vectors": str(v / "docs.npy"), "ids": str(SCIFACT / "doc_ids.txt"),
                                           "queryVectors": str(v / "queries.npy"),
                                           "queryIds": str(SCIFACT / "query_ids.txt")}},
                     "index": {"version": version, "factory": factory, "metric": "cosine"},
                     "rollout": {"percentage": 100}, "history": {"keep": 3}}}


def controller(*args: str) -> None:
    env = {**os.environ, "CONTROLLER_DATA_ROOTS": str(SCIFACT)}
    subprocess.run([sys.executable, "-m", "controller.cli.main", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pct(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, p))


def timed_pair(first, second, queries: np.ndarray, n: int) -> tuple[list[float], list[float]]:
    """Both functions on the same (query number, query), alternately: on a shared machine whose load
    changes by the second, two back-to-back runs of 3000 calls each compare two different machines."""
    a, b = [], []
    for i in range(n):
        q = queries[i % len(queries)]
        for fn, out in ((first, a), (second, b)) if i % 2 else ((second, b), (first, a)):
            t = time.perf_counter()
            fn(i, q)
            out.append(time.perf_counter() - t)
    return a, b


def compare_in_process(routed, queries: np.ndarray, rounds: int, *, new_keys: bool = False
                       ) -> tuple[list[float], list[float], list[float]]:
    """Raw FAISS against the pool's search, `rounds` rounds of 3000 alternated pairs: every round's
    p50 ratio, and the raw and pool times of the median round. `new_keys`: every query a routing key
    never seen before (the pool remembers each key's bucket; this is what a first-time user costs)."""
    import faiss

    from controller.engine.serving import search

    loaded = routed.versions[routed.routing.stable]
    key = loaded.model_key
    # raw searches the very index the pool loaded (a FAISS index, memory-mapped): a second copy read
    # with faiss.read_index would compete with it for the CPU cache, and the ratio would measure that
    index = loaded.index.index
    assert isinstance(index, faiss.Index)
    # raw = what a caller of FAISS itself does for cosine: normalise the query, search the index;
    # the pool gets the routing keys the HTTP load below sends (a key costs a hash per query)
    done = []
    for round_ in range(max(rounds, 1)):
        users = [f"new-{round_}-{i}" for i in range(3000)] if new_keys else [f"user-{i}" for i in range(len(queries))]
        raw, inproc = timed_pair(lambda i, q: index.search(q.reshape(1, -1) / np.linalg.norm(q), 10),
                                 lambda i, q: search(routed, vector=q, model=key, k=10, key=users[i % len(users)]),
                                 queries, 3000)
        done.append((pct(inproc, 50) / pct(raw, 50), raw, inproc))
    _, raw, inproc = sorted(done, key=lambda r: r[0])[len(done) // 2]
    return [r[0] for r in done], raw, inproc


# ---- load generator: processes x threads, each with a keep-alive http.client connection ---------------
def _worker(port: int, bodies: list[bytes], count: int, threads: int, out: "mp.Queue") -> None:
    results: list[tuple[float, float, int, str]] = []
    lock = threading.Lock()

    def run(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        local = []
        for i in range(n):
            body = bodies[i % len(bodies)]
            t0 = time.time()
            try:
                conn.request("POST", "/v1/indexes/scifact/search", body, {"content-type": "application/json"})
                r = conn.getresponse()
                r.read()
                local.append((t0, time.time(), r.status, r.getheader("x-index-version") or ""))
            except (OSError, http.client.HTTPException) as exc:
                local.append((t0, time.time(), 0, repr(exc)))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        with lock:
            results.extend(local)

    per = [count // threads + (1 if i < count % threads else 0) for i in range(threads)]
    ts = [threading.Thread(target=run, args=(n,)) for n in per]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out.put(results)


def load(port: int, bodies: list[bytes], total: int, concurrency: int, processes: int = 4
         ) -> tuple[list[tuple[float, float, int, str]], float]:
    processes = min(processes, concurrency)
    q: mp.Queue = mp.Queue()
    ctx = [mp.Process(target=_worker, args=(port, bodies[p::processes] or bodies, total // processes,
                                           concurrency // processes, q)) for p in range(processes)]
    t = time.perf_counter()
    for p in ctx:
        p.start()
    results = []
    for _ in ctx:
        results += q.get()
    for p in ctx:
        p.join()
    return results, time.perf_counter() - t


def start_server(store: Path, options: Sequence[str] = ("--log-level", "warning", "--poll", "0.2")
                 ) -> tuple[subprocess.Popen, int]:
    """`controller serve --port 0` once /readyz answers 200 (bench_mirror.py uses it too)."""
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli.main", "serve", "--store", str(store),
                             "--port", "0", *options], stdout=subprocess.PIPE, text=True, cwd=REPO)
    line = proc.stdout.readline()
    port = int(line.rsplit(":", 1)[-1])
    for _ in range(600):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200:
                return proc, port
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server never became ready")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--serial", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the in-process comparison")
    parser.add_argument("--in-process-only", action="store_true", help="skip the HTTP measurements")
    args = parser.parse_args()
    if not (SCIFACT / "vectors" / MODEL / "docs.npy").is_file():
        print(f"SciFact vectors not found under {SCIFACT} (set SCIFACT_DIR)")
        return 1
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    store = work / "store"
    for version, factory in (("v1", "Flat"), ("v2", "HNSW32")):
        (work / f"{version}.yaml").write_text(yaml.safe_dump(manifest(version, factory)))
    t = time.perf_counter()
    controller("reconcile", str(work / "v1.yaml"), "--store", str(store))
    print(f"built SciFact {MODEL} Flat v1 in {time.perf_counter() - t:.1f} s ({store})")

    from controller.engine.serving import VersionPool
    from controller.store.fs import Store

    queries = np.load(SCIFACT / "vectors" / MODEL / "queries.npy").astype(np.float32)
    s = Store(store)
    pool = VersionPool(s, ["scifact"])
    pool.refresh()
    routed = pool.routed("scifact")
    key = routed.versions["v1"].model_key
    ratios, raw, inproc = compare_in_process(routed, queries, args.rounds)
    raw50, pool50 = pct(raw, 50), pct(inproc, 50)
    print(f"raw index.search        p50 {raw50:.3f} ms  p99 {pct(raw, 99):.3f} ms")
    print(f"in-process pool search  p50 {pool50:.3f} ms  p99 {pct(inproc, 99):.3f} ms  "
          f"ratio {pool50 / raw50:.2f}x raw (goal <= 1.1x; median of {len(ratios)} rounds: "
          f"{' '.join(f'{r:.3f}' for r in ratios)}; load average {os.getloadavg()[0]:.2f})")
    new, raw_new, pool_new = compare_in_process(routed, queries, 1, new_keys=True)
    print(f"  the same, every key new p50 {pct(pool_new, 50):.3f} ms  ratio {new[0]:.2f}x raw (one round; "
          f"a key seen before reuses its remembered bucket, a new one is hashed)")
    if args.in_process_only:
        return 0

    bodies = [json.dumps({"vector": q.tolist(), "model": key, "k": 10, "key": f"user-{i}"}).encode()
              for i, q in enumerate(queries)]
    proc, port = start_server(store)
    try:
        load(port, bodies, 400, 4)  # warm-up
        serial, _ = load(port, bodies, args.serial, 1, processes=1)
        lat = [b - a for a, b, *_ in serial]
        print(f"served, 1 client        p50 {pct(lat, 50):.3f} ms  p99 {pct(lat, 99):.3f} ms  "
              f"served p50 - raw p50 = {pct(lat, 50) - raw50:.3f} ms (goal <= 2 ms)")
        results, wall = load(port, bodies, args.requests, args.concurrency)
        lat = [b - a for a, b, *_ in results]
        failed = sum(1 for r in results if r[2] != 200)
        print(f"served, {args.concurrency} concurrent  {len(results)} requests in {wall:.1f} s = "
              f"{len(results) / wall:.0f} QPS (goal >= 500)  p50 {pct(lat, 50):.2f} ms  p99 {pct(lat, 99):.2f} ms  "
              f"failed {failed}")
        steady99 = pct(lat, 99)

        # alias switches under the same load: promote v2, then roll back to v1
        switch: dict[str, float] = {}

        def switches() -> None:
            time.sleep(2.0)
            switch["start"] = time.time()
            controller("reconcile", str(work / "v2.yaml"), "--store", str(store))
            switch["promoted"] = time.time()
            time.sleep(1.0)
            controller("rollback", "scifact", "--store", str(store))
            switch["end"] = time.time() + 1.0

        th = threading.Thread(target=switches)
        th.start()
        results, wall = load(port, bodies, args.requests, args.concurrency)
        th.join()
        failed = [r for r in results if r[2] != 200]
        during = [b - a for a, b, *_ in results if switch["promoted"] - 1.0 <= a <= switch["end"]]
        versions = sorted({r[3] for r in results if r[2] == 200})
        print(f"switches under load     {len(results)} requests, failed {len(failed)} (goal 0), versions served "
              f"{versions}; p99 steady {steady99:.2f} ms, during switches {pct(during, 99):.2f} ms over "
              f"{len(during)} requests = {pct(during, 99) / steady99:.2f}x (goal <= 3x)")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
