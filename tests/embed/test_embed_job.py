"""`controller embed`: shards, workers, and resuming after SIGKILL at a counting server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from controller.embed.cache import EmbeddingCache
from controller.manifest.load import load_manifests
from controller.store.fs import Store
from tests.embed.fake_openai import FakeEmbeddingServer
from tests.embed.test_cache import documents_embedded, http_manifest
from tests.helpers import manifest, workspace, write_manifest

REPO = Path(__file__).resolve().parents[2]


def cache_of(store: Path, path: Path) -> EmbeddingCache:
    [loaded] = load_manifests(path)
    return EmbeddingCache.for_store(store, loaded.manifest.spec.model.fingerprint())


def test_shards_partition_the_corpus_and_workers_agree(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=120)
    path = write_manifest(ws, manifest("v1"))
    hashes = set(json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines())
    n = len(hashes)
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["embed", str(path), "--store", str(one), "--shard", "0/2", "-o", "json"]) == 0
    first = json.loads(capsys.readouterr().out)["jobs"][0]
    assert main(["embed", str(path), "--store", str(one), "--shard", "1/2", "-o", "json"]) == 0
    second = json.loads(capsys.readouterr().out)["jobs"][0]
    assert first["embedded"] + second["embedded"] == n and first["hits"] == second["hits"] == 0
    assert 0 < first["documents"] < n
    assert main(["embed", str(path), "--store", str(two), "--workers", "2", "-o", "json"]) == 0
    both = json.loads(capsys.readouterr().out)["jobs"][0]
    assert both["embedded"] == n
    a, b = cache_of(one, path), cache_of(two, path)
    [loaded] = load_manifests(path)
    from controller.store.corpus import read_corpus
    corpus = read_corpus(loaded.paths["corpus"], "id", ["title", "text"])
    fa, va = a.get(corpus.hashes)
    fb, vb = b.get(corpus.hashes)
    assert fa.all() and fb.all()
    np.testing.assert_allclose(va, vb, atol=1e-6)
    # the build after the job embeds nothing
    assert main(["reconcile", str(path), "--store", str(one), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["indexes"][0]["embedded"] == 0


def test_bad_shard_is_invalid_input(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=10)
    path = write_manifest(ws, manifest("v1"))
    assert main(["embed", str(path), "--store", str(tmp_path / "s"), "--shard", "2/2"]) == 2
    assert "--shard" in capsys.readouterr().err


def interrupt_and_resume(tmp_path: Path, signum: int, *, kills: int = 20, batch: int = 8, concurrency: int = 2):
    """`kills` runs of `controller embed`, each hit by `signum` at a random point after its first request,
    then a run to completion. Returns (server, corpus size, cache, signals that landed, exit codes)."""
    ws = workspace(tmp_path, n_docs=240)
    store = tmp_path / "store"
    rng = random.Random(7)
    server = FakeEmbeddingServer(dim=16, work_per_text=0.004)
    with server:
        doc = http_manifest(server, "v1")
        doc["spec"]["model"]["options"].update(batchSize=batch, concurrency=concurrency)
        path = write_manifest(ws, doc)
        corpus_size = len((ws / "data" / "corpus.jsonl").read_text().splitlines())
        cmd = [sys.executable, "-m", "controller.cli.main", "embed", str(path), "--store", str(store)]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        landed, codes = 0, []
        for _ in range(kills):
            seen = len(server.requests)
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while len(server.requests) == seen and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(rng.uniform(0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signum)
                landed += 1
            _, err = proc.communicate(timeout=60)
            assert b"Traceback" not in err, err.decode()
            codes.append(proc.returncode)
        final = subprocess.run(cmd + ["-o", "json"], env=env, capture_output=True, text=True, timeout=120)
        assert final.returncode == 0, final.stderr
    return server, corpus_size, cache_of(store, path), landed, codes


def stored_rows(cache: EmbeddingCache) -> int:
    return sum(len(p.read_bytes()) // 17 for p in cache.dir.glob("*.idx"))


@pytest.mark.slow
def test_sigterm_at_random_points_then_resume_embeds_the_corpus_exactly_once(tmp_path):
    """The graceful stop (what Kubernetes sends first) keeps the batches in flight: the server's count is exact."""
    server, corpus_size, cache, landed, codes = interrupt_and_resume(tmp_path, signal.SIGTERM)
    assert landed >= 10
    assert set(codes) <= {0, 1} and 1 in codes  # interrupted runs exit 1 (EmbedInterrupted), no traceback
    assert len(cache) == corpus_size and stored_rows(cache) == corpus_size  # 0 missing, 0 stored twice
    passages = {t: n for t, n in server.embedded.items() if t.startswith("passage: ")}
    assert len(passages) == corpus_size  # 0 missing at the server
    assert max(passages.values()) == 1   # 0 duplicates at the server
    assert documents_embedded(server) == corpus_size


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_loses_at_most_the_batches_in_flight(tmp_path):
    """A SIGKILL cannot be caught: a request the server answered but whose answer was not yet written
    is lost, and sent again on resume. Nothing is stored twice or missing; the server's surplus is
    bounded by the batches in flight (batchSize x concurrency texts) per kill."""
    batch, concurrency = 8, 2
    server, corpus_size, cache, landed, _ = interrupt_and_resume(tmp_path, signal.SIGKILL, batch=batch,
                                                                 concurrency=concurrency)
    total = documents_embedded(server)
    assert landed >= 10
    assert len(cache) == corpus_size and stored_rows(cache) == corpus_size  # 0 missing, 0 stored twice
    assert corpus_size <= total <= corpus_size + landed * batch * concurrency
    print(f"{landed} SIGKILLs: server embedded {total} texts for {corpus_size} documents "
          f"(bound {corpus_size + landed * batch * concurrency})")
