"""setMirror and interleave through a real `controller serve` process.

Mirroring never changes what a user gets: mirrored responses are identical to unmirrored ones, and
a candidate whose query embedder (a real OpenAI-compatible server on loopback) sleeps 200 ms or
fails leaves the stable's latency alone. The baseline is measured in the same run, on a second
index served by the same process without mirroring, with the requests alternating between the two,
so both see the same machine noise.

The goal itself (p99 moved by at most 10%) is a speed target, so bench/bench_mirror.py measures it,
with a bootstrap interval and an A/A control: a p99 of 8,000 requests is the 80th slowest, and its
ratio between two identical indexes has a standard deviation of about 0.04 here, so a timed test
of 1.10 failed three CI runs on a loaded machine (ratios 1.11-1.14) with nothing wrong. The test
below keeps a margin that only a real fault can cross, such as a request path that waits for the
candidate (100x slower).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from controller.store.fs import Store
from tests.helpers import manifest, workspace, write_manifest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
QUERIES = ["protein folding", "cancer risk", "vitamin d", "gene expression", "immune response", "dna repair",
           "cell cycle", "blood pressure", "insulin", "antibodies"]


def reconcile(ws: Path, doc: dict, store: Path, filename: str) -> None:
    assert main(["reconcile", str(write_manifest(ws, doc, filename)), "--store", str(store)]) == 0


def candidate(server: "EmbedderProcess", steps: list) -> dict:
    doc = manifest("v2", gates=[{"metric": "ndcg@10", "min": 0.0}])
    doc["spec"]["model"] = {"provider": "http", "name": "fake", "version": "1", "dim": server.dim,
                            "options": {"baseUrl": server.base_url, "batchSize": 64, "retries": 0}}
    doc["spec"]["rollout"] = {"steps": steps}
    return doc


class EmbedderProcess:
    """The fake embedding server as a child process on a fixed port (the URL is in the version's meta)."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen | None = None
        self.dim = 32

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, *extra: str) -> None:
        self.stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.serve.embedder_process", "--port",
                                      str(self.port), "--dim", str(self.dim), *extra],
                                     stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc.stdout.close()
            self.proc = None


@pytest.fixture(scope="module")
def embedder():
    process = EmbedderProcess()
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def mirrored_store(tmp_path_factory, embedder) -> Path:
    """qs: v1 stable, v2 (http embedder) mirrored at 100%; base: v1 only, the unmirrored baseline."""
    tmp = tmp_path_factory.mktemp("mirror")
    ws = workspace(tmp, n_docs=120)
    store = tmp / "store"
    reconcile(ws, manifest("v1"), store, "v1.yaml")
    reconcile(ws, manifest("v1", name="base"), store, "base.yaml")
    reconcile(ws, candidate(embedder, [{"setMirror": 100}, {"pause": {}}]), store, "v2.yaml")
    routing = Store(store).routing("qs")
    assert (routing.stable, routing.candidate, routing.weight, routing.mirror) == ("v1", "v2", 0.0, 100.0)
    return store


def records(store: Path, kind: str, index: str = "qs") -> list[dict]:
    out = []
    for segment in sorted((store / "events" / index).glob("*.jsonl")):
        for line in segment.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                if record.get("type") == kind:
                    out.append(record)
    return out


def visible(response) -> tuple:
    body = response.json()
    return body["version"], body["role"], [(h["id"], h["score"], h["rank"]) for h in body["hits"]]


def test_mirrored_responses_are_identical_and_logged(mirrored_store, embedder, serve):
    server = serve(mirrored_store, "--flush-window", "0.2")
    mirrored = [server.search("qs", query=q, k=5, key=f"user-{i}") for i, q in enumerate(QUERIES)]
    unmirrored = [server.search("base", query=q, k=5, key=f"user-{i}") for i, q in enumerate(QUERIES)]
    assert all(r.status_code == 200 for r in mirrored + unmirrored)
    # same stable build, same query: the user sees exactly what the unmirrored index returns
    assert [visible(r) for r in mirrored] == [visible(r) for r in unmirrored]
    assert {tuple(sorted(r.json())) for r in mirrored} == {tuple(sorted(r.json())) for r in unmirrored}
    deadline = time.monotonic() + 20
    while len(records(mirrored_store, "mirror")) < len(QUERIES) and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = {r["requestId"]: r for r in records(mirrored_store, "mirror")}
    for response in mirrored:
        body = response.json()
        record = logged[body["requestId"]]
        assert (record["version"], record["stableVersion"], record["error"]) == ("v2", "v1", None)
        assert record["stableIds"] == [h["id"] for h in body["hits"]] and len(record["ids"]) == 5
    assert not records(mirrored_store, "mirror", "base")


def p99(xs: list[float]) -> float:
    return float(np.percentile(xs, 99))


@pytest.mark.parametrize("fault", ["sleep200ms", "raises"])
def test_a_slow_or_failing_candidate_leaves_stable_latency_alone(mirrored_store, embedder, serve, fault):
    embedder.start(*(["--sleep", "0.2"] if fault == "sleep200ms" else ["--fault", "500"]))
    try:
        server = serve(mirrored_store, "--flush-window", "0.2", "--no-record")
        for q in QUERIES:  # warm both paths
            server.search("qs", query=q, k=10), server.search("base", query=q, k=10)
        took: dict[str, list[float]] = {"qs": [], "base": []}
        since = time.time()
        for i in range(4000):  # alternating, so both indexes see the same bursts of machine noise
            for name in ("qs", "base") if i % 2 else ("base", "qs"):
                started = time.perf_counter()
                response = server.search(name, query=QUERIES[i % len(QUERIES)] + f" {i}", k=10)
                took[name].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200 and response.json()["version"] == "v1"
        ratio = p99(took["qs"]) / p99(took["base"])
        print(f"{fault}: stable p99 mirrored {p99(took['qs']):.2f} ms vs unmirrored {p99(took['base']):.2f} ms "
              f"(ratio {ratio:.3f}; p50 {np.median(took['qs']):.2f} vs {np.median(took['base']):.2f} ms)")
        # the 10% goal is bench/bench_mirror.py's (see the module docstring); 1.5 is far outside this
        # ratio's noise (a bootstrap standard deviation of about 0.05 at 4,000 a side) and far below
        # what waiting for the candidate gives
        assert ratio <= 1.5
        assert np.median(took["qs"]) < 50  # the candidate sleeps 200 ms: no request waited for it
        time.sleep(0.5)
        errors = [r["error"] for r in records(mirrored_store, "mirror") if r["ts"] >= since]
        assert errors  # the candidate was mirrored while the stable was timed
        assert all(errors) if fault == "raises" else not any(errors)
    finally:
        embedder.start()


def test_mirror_sampling_is_sticky_per_routing_key(tmp_path, embedder, serve):
    """setMirror 50 through the real service: a key's queries are all mirrored or none, exactly the keys
    core.routing.mirrored picks for this rollout, about half of them."""
    from controller.core.routing import mirrored

    ws = workspace(tmp_path, n_docs=60)
    store = tmp_path / "store"
    reconcile(ws, manifest("v1"), store, "v1.yaml")
    reconcile(ws, candidate(embedder, [{"setMirror": 50}, {"pause": {}}]), store, "v2.yaml")
    routing = Store(store).routing("qs")
    assert (routing.candidate, routing.mirror) == ("v2", 50.0)
    server = serve(store, "--flush-window", "0.2")
    keys = [f"user-{i}" for i in range(60)]
    sent: dict[str, list[str]] = {}
    for round_ in range(3):
        for i, key in enumerate(keys):
            response = server.search("qs", query=QUERIES[(i + round_) % len(QUERIES)], k=5, key=key)
            assert response.status_code == 200 and response.json()["version"] == "v1"
            sent.setdefault(key, []).append(response.json()["requestId"])
    chosen = {k for k in keys if mirrored(routing, "v1", key=k, draw=0.0)}
    assert 15 <= len(chosen) <= 45  # about half of 60
    deadline = time.monotonic() + 20
    while len(records(store, "mirror")) < 3 * len(chosen) and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = {r["requestId"] for r in records(store, "mirror")}
    per_key = {k: sum(rid in logged for rid in rids) for k, rids in sent.items()}
    assert {k for k, n in per_key.items() if n} == chosen
    assert all(n in (0, 3) for n in per_key.values()), per_key  # never some of a user's queries
