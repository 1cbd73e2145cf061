"""Embedding throughput, each figure a ratio against a baseline measured in the same run.

1. provider http vs a plain client loop (http.client keep-alive connections in a
   thread pool, JSON parsed into numpy) at the same batch size and concurrency,
   against the same loopback server (tests/embed/fake_openai.py with simulated
   inference time per text). Goal: provider >= 0.9x the plain loop.
2. `controller embed --workers 2` vs `--workers 1` with the hashing embedder on
   SciFact (or the quickstart corpus repeated), each into an empty store.
   Goal: >= 1.6x (needs two idle cores; the ratio says what this machine gave).

Run: .venv/bin/python bench/bench_embed.py [texts]
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_drift import best_of  # noqa: E402
from controller.embed import make_embedder  # noqa: E402
from controller.engine.embedding import embed_job  # noqa: E402
from controller.manifest.load import load_manifests  # noqa: E402
from controller.store.fs import Store  # noqa: E402
from tests.embed.fake_openai import FakeEmbeddingServer  # noqa: E402

BATCH, CONCURRENCY, DIM = 32, 4, 384


def plain_loop(base_url: str, texts: list[str]) -> np.ndarray:
    host, port = base_url.split("//")[1].split("/")[0].split(":")
    local = threading.local()

    def post(batch: list[str]) -> np.ndarray:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, int(port), timeout=60)
        local.conn.request("POST", "/v1/embeddings", body=json.dumps({"model": "m", "input": batch}),
                           headers={"Content-Type": "application/json"})
        data = json.loads(local.conn.getresponse().read())["data"]
        return np.asarray([d["embedding"] for d in data], dtype=np.float32)

    batches = [texts[i:i + BATCH] for i in range(0, len(texts), BATCH)]
    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return np.concatenate(list(pool.map(post, batches)))


def bench_http(n: int) -> float:
    texts = [f"document {i} about vitamin d, sleep and protein intake" for i in range(n)]
    with FakeEmbeddingServer(dim=DIM, work_per_text=0.0005) as server:
        emb = make_embedder({"provider": "http", "name": "m", "version": "1", "dim": DIM, "normalize": False,
                             "options": {"baseUrl": server.base_url, "model": "m", "batchSize": BATCH,
                                         "concurrency": CONCURRENCY}}, {})
        ids = [str(i) for i in range(n)]
        np.testing.assert_allclose(emb.embed_documents(ids, texts), plain_loop(server.base_url, texts), atol=1e-6)
        t_plain = best_of(lambda: plain_loop(server.base_url, texts))
        t_provider = best_of(lambda: emb.embed_documents(ids, texts))
    ratio = t_plain / t_provider
    print(f"http: {n} texts, batch {BATCH}, concurrency {CONCURRENCY}: plain loop {t_plain:.3f}s "
          f"({n / t_plain:,.0f}/s), provider {t_provider:.3f}s ({n / t_provider:,.0f}/s): "
          f"{ratio:.2f}x the plain loop (goal >= 0.9x)")
    return ratio


def corpus_manifest(root: Path) -> Path:
    scifact = Path(os.environ.get("SCIFACT_DIR", REPO.parent / "shared" / "data" / "scifact"))
    data = root / "corpus.jsonl"
    if (scifact / "corpus.jsonl").is_file():
        lines = (scifact / "corpus.jsonl").read_text().splitlines()
        id_field = "_id"
    else:
        base = (REPO / "examples" / "quickstart" / "data" / "corpus.jsonl").read_text().splitlines()
        lines = [json.dumps({**json.loads(l), "id": f"{r}-{json.loads(l)['id']}",
                             "text": f"{json.loads(l)['text']} {r}"}) for r in range(8) for l in base]
        id_field = "id"
    data.write_text("\n".join(lines) + "\n")
    doc = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "bench"},
           "spec": {"corpus": {"path": "corpus.jsonl", "idField": id_field, "textFields": ["title", "text"]},
                    "model": {"provider": "hashing", "name": "h", "version": "1", "dim": DIM,
                              "options": {"wordNgrams": 2, "charNgrams": [3, 4, 5]}},
                    "index": {"version": "v1"}}}
    path = root / "index.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def bench_workers() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        [loaded] = load_manifests(corpus_manifest(Path(tmp)))
        times = {}
        for workers in (1, 2):
            store = Store(Path(tmp) / f"store-{workers}")
            t = time.perf_counter()
            report = embed_job(loaded, store, workers=workers)
            times[workers] = time.perf_counter() - t
            print(f"embed --workers {workers}: {report['embedded']} documents in {times[workers]:.2f}s "
                  f"({report['embedded'] / times[workers]:,.0f} docs/s)")
    ratio = times[1] / times[2]
    print(f"workers 2 vs 1: {ratio:.2f}x (goal >= 1.6x; {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})")
    return ratio


if __name__ == "__main__":
    bench_http(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
    bench_workers()
