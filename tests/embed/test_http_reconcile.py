"""provider http through the CLI: a failing server fails the build cleanly, and the key leaks nowhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.embed.fake_openai import FakeEmbeddingServer
from tests.embed.test_cache import documents_embedded, http_manifest
from tests.helpers import workspace, write_manifest

KEY = "sk-live-3b9f0c1d7e2a4f6895ab"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.cli.main", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def files_containing(root: Path, needle: str) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file() and needle.encode() in path.read_bytes():
            hits.append(str(path))
    return hits


@pytest.fixture
def env(monkeypatch) -> dict[str, str]:
    return {**os.environ, "EIC_TEST_API_KEY": KEY, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def test_faults_fail_the_build_cleanly_then_a_retry_resumes_and_the_key_is_nowhere(tmp_path, env):
    ws = workspace(tmp_path, n_docs=60)
    store = tmp_path / "store"
    n = len((ws / "data" / "corpus.jsonl").read_text().splitlines())
    with FakeEmbeddingServer(dim=16, api_key=KEY) as server:
        doc = http_manifest(server, "v1")
        doc["spec"]["model"]["options"].update(apiKeyEnv="EIC_TEST_API_KEY", retries=2, backoff=0.01,
                                               concurrency=1, batchSize=16)
        path = write_manifest(ws, doc)
        plan = cli("reconcile", str(path), "--store", str(store), "--dry-run", "--out", str(tmp_path / "plan.json"),
                   env=env)
        assert plan.returncode == 0, plan.stderr

        # batches 1 and 2 succeed, then batch 3 fails on every attempt
        server.faults.extend([None, None, "500", "429", "500"])
        failed = cli("reconcile", str(path), "--store", str(store), env=env)
        assert failed.returncode == 1
        third = json.loads((ws / "data" / "corpus.jsonl").read_text().splitlines()[32])["id"]
        assert "provider http (model 'fake'" in failed.stderr and f"first id '{third}'" in failed.stderr
        assert f"[32 of the {n} texts to embed are cached; a retry resumes there]" in failed.stderr
        assert "failed after 3 attempts" in failed.stderr and "Traceback" not in failed.stderr
        assert not (store / "indexes" / "qs" / "versions" / "v1").exists()  # nothing half-embedded promoted
        assert documents_embedded(server) == 32

        ok = cli("reconcile", str(path), "--store", str(store), "-o", "json", env=env)
        assert ok.returncode == 0, ok.stderr
        assert documents_embedded(server) == n  # the retry embedded only what the failure left
        assert all(r["headers"]["Authorization"] == f"Bearer {KEY}" for r in server.requests)
        for verb in (("status", "qs"), ("history", "qs")):
            shown = cli(*verb, "--store", str(store), "-o", "json", env=env)
            assert shown.returncode == 0 and KEY not in shown.stdout + shown.stderr
    for out in (plan, failed, ok):
        assert KEY not in out.stdout + out.stderr
    assert files_containing(store, KEY) == [] and files_containing(tmp_path, KEY) == []
    assert "EIC_TEST_API_KEY" in (store / "indexes" / "qs" / "versions" / "v1" / "meta.json").read_text()


def test_a_key_written_into_the_manifest_is_refused_without_echoing_it(tmp_path, env):
    ws = workspace(tmp_path, n_docs=10)
    with FakeEmbeddingServer(dim=16) as server:
        doc = http_manifest(server, "v1")
        doc["spec"]["model"]["options"]["apiKey"] = KEY
        path = write_manifest(ws, doc)
        out = cli("reconcile", str(path), "--store", str(tmp_path / "store"), env=env)
    assert out.returncode == 2
    assert "spec.model.options.apiKey" in out.stderr and "apiKeyEnv" in out.stderr
    assert KEY not in out.stdout + out.stderr
    assert not (tmp_path / "store").exists()
