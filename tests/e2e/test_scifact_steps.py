"""End to end on SciFact: stepped rollouts through `controller serve`, decided by simulated users.

- MiniLM is stable; E5 is the candidate with steps [setMirror 100, pause, setWeight 10, analysis,
  interleave, setWeight 50, analysis], then 100: it is promoted.
- A degraded candidate (MiniLM randomly projected to 16 dimensions), let through loose offline gates
  on purpose, is aborted by the online gates: weight back to 0.
Status and history carry the numbers. The users are controller.simulate's position-biased cascade
on the golden qrels, over real HTTP; query texts are embedded by a real HTTP server answering the
golden queries with their precomputed vectors (tests/e2e/query_vectors_server.py: no model can be
downloaded here). Documents are the shared precomputed vectors.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.checks.golden.io import load_golden
from controller.cli.main import main
from controller.simulate.http import SimulatedUsers
from controller.simulate.rankings import random_projection
from controller.store.fs import Store
from tests.serve.conftest import Server

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
MINILM, E5 = "all-minilm-l6-v2", "multilingual-e5-small-q4"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vectors(scifact: Path, tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """model name -> (docs.npy, queries.npy); `minilm16` is MiniLM projected to 16 dimensions."""
    out = {name: (scifact / "vectors" / folder / "docs.npy", scifact / "vectors" / folder / "queries.npy")
           for name, folder in (("minilm", MINILM), ("e5", E5))}
    tmp = tmp_path_factory.mktemp("minilm16")
    for kind, path in zip(("docs", "queries"), out["minilm"]):
        np.save(tmp / f"{kind}.npy", random_projection(np.load(path), 16, seed=0).astype(np.float32))
    out["minilm16"] = (tmp / "docs.npy", tmp / "queries.npy")
    return out


@pytest.fixture(scope="module")
def query_server(scifact: Path, vectors):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.e2e.query_vectors_server", "--port", str(port),
                             "--data", str(scifact), *[a for name, (_, q) in vectors.items()
                                                       for a in ("--model", f"{name}={q}")]],
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    assert proc.stdout.readline().strip() == "ready"
    yield f"http://127.0.0.1:{port}/v1"
    proc.terminate()
    proc.wait(timeout=10)
    proc.stdout.close()


def index_manifest(data: Path, name: str, model: str, version: str, dim: int, files: tuple[Path, Path],
                   query_url: str, gates: list[dict], steps: list | None = None) -> dict:
    docs, queries = files
    spec = {
        "corpus": {"path": str(data / "corpus.jsonl"), "idField": "_id", "textFields": ["title", "text"]},
        "model": {"provider": "precomputed", "name": model, "version": "1", "dim": dim, "options": {
            "vectors": str(docs), "ids": str(data / "doc_ids.txt"), "queryVectors": str(queries),
            "queryIds": str(data / "query_ids.txt")},
            "queryEmbedder": {"provider": "http", "name": model, "version": "1", "dim": dim,
                              "options": {"baseUrl": query_url, "model": model, "retries": 0}}},
        "index": {"version": version, "factory": "Flat", "metric": "cosine"},
        "checks": {"golden": {"queries": str(data / "queries.jsonl"), "qrels": str(data / "qrels" / "test.tsv"),
                              "k": 10, "gates": gates}},
    }
    if steps is not None:
        spec["rollout"] = {"steps": steps}
    return {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": name},
            "spec": spec}


def reconcile(tmp: Path, doc: dict, store: Path) -> int:
    path = tmp / f"{doc['metadata']['name']}-{doc['spec']['index']['version']}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return main(["reconcile", str(path), "--store", str(store)])


def drive(url: str, index: str, golden, n: int, seed: int, threads: int = 4) -> None:
    """`n` simulated searches with feedback, from `threads` concurrent users' sessions."""
    def one(i: int) -> None:
        SimulatedUsers(url, index, golden.query_texts, golden.qrels, seed=seed * 100 + i).run(n // threads)

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def roll(tmp: Path, doc: dict, store: Path, url: str, golden, *, limit_s: float = 600) -> dict:
    """Reconcile, drive users, reconcile... until the rollout is promoted or aborted; the last status."""
    assert reconcile(tmp, doc, store) in (0, 3)
    name = doc["metadata"]["name"]
    deadline, round_ = time.monotonic() + limit_s, 0
    while time.monotonic() < deadline:
        round_ += 1
        drive(url, name, golden, 400, seed=round_)
        time.sleep(0.5)  # the service flushes its event log every 0.2 s
        code = reconcile(tmp, doc, store)
        status = json.loads((store / "indexes" / name / "status.json").read_text())
        rollout = status.get("rollout") or {}
        print(f"round {round_}: {status['phase']} step {rollout.get('currentStepIndex')} "
              f"weight {status['weight']} waiting {rollout.get('waitingFor', '')[:160]}", flush=True)
        if rollout.get("promoted") or rollout.get("aborted"):
            return {"status": status, "code": code}
    raise AssertionError(f"the rollout of {name} decided nothing within {limit_s:g}s: {rollout}")


def test_e5_promoted_and_a_degraded_candidate_aborted_on_live_traffic(scifact, vectors, query_server, tmp_path,
                                                                      monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv("CONTROLLER_DATA_ROOTS", f"{scifact.resolve()}:{vectors['minilm16'][0].parent}")
    golden = load_golden(scifact / "qrels" / "test.tsv", scifact / "queries.jsonl")
    loose = [{"metric": "ndcg@10", "min": 0.0}]  # offline gates let the degraded one through: online gates decide
    for name in ("scifact", "degraded"):
        assert reconcile(tmp_path, index_manifest(scifact, name, "minilm", "minilm", 384, vectors["minilm"],
                                                  query_server, loose), store) == 0
    analysis = {"gates": [{"metric": "ctr", "maxDrop": 0.10}, {"metric": "mrr", "maxDrop": 0.10}],
                "interval": "2s", "minSamples": 100, "maxDuration": "8m"}
    steps = [{"setMirror": 100}, {"pause": {"duration": "3s"}}, {"setWeight": 10}, {"analysis": analysis},
             {"interleave": {"percentage": 50, "minQueries": 150, "interval": "2s", "maxDuration": "8m",
                             "margin": 0.1}},
             {"setWeight": 50}, {"analysis": analysis}]
    server = Server(store, "--flush-window", "0.2", "--no-record")
    try:
        e5 = index_manifest(scifact, "scifact", "e5", "e5", 384, vectors["e5"], query_server,
                            [{"metric": "ndcg@10", "maxDrop": 0.02}], steps)
        done = roll(tmp_path, e5, store, server.url, golden)
        status = done["status"]
        assert status["phase"] == "Healthy" and status["stable"]["version"] == "e5" and done["code"] == 0
        journal = Store(store).journal("scifact")
        reasons = [(r["reason"], r["step"]["index"]) for r in journal if "step" in r]
        assert [i for _, i in reasons] == sorted(i for _, i in reasons)  # every step, in order
        assert reasons[-1][0] == "StepsComplete" and len(reasons) >= 8
        passed = [r["step"]["analysis"] for r in journal if "step" in r and r["step"].get("analysis")]
        assert any(a.get("interleave") for a in passed) and any(a.get("gates") for a in passed)
        mirrors = [json.loads(line) for seg in (store / "events" / "scifact").glob("*.jsonl")
                   for line in seg.read_text().splitlines() if '"type":"mirror"' in line]
        assert mirrors and all(m["version"] == "e5" and m["stableVersion"] == "minilm" for m in mirrors)
        assert sum(m["error"] is None for m in mirrors) > 0.9 * len(mirrors)

        degraded = index_manifest(scifact, "degraded", "minilm16", "minilm16", 16, vectors["minilm16"],
                                  query_server, loose, steps)
        done = roll(tmp_path, degraded, store, server.url, golden)
        status = done["status"]
        assert status["phase"] == "RolledBack" and status["rollout"]["aborted"] and status["weight"] == 0
        assert Store(store).routing("degraded").stable == "minilm" and Store(store).routing("degraded").candidate is None
        last = [r for r in Store(store).journal("degraded") if "step" in r][-1]
        assert last["reason"] == "AnalysisFailed" and last["to"]["weight"] == 0
        failed_gates = [g for g in last["step"]["analysis"]["gates"] if g["decision"] == "failed"]
        assert failed_gates and all(g["samples"]["candidate"] >= 100 for g in failed_gates)
        print(json.dumps({"e5": [r["message"] for r in journal if "step" in r],
                          "degraded": last["message"]}, indent=1))
    finally:
        server.stop()
