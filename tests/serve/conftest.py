"""A real `controller serve` process on a loopback port over a quickstart store (hashing embedder)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml

from controller.cli.main import main

REPO = Path(__file__).resolve().parents[2]
QS = REPO / "examples" / "quickstart"


def controller(*argv: str) -> int:
    return main(list(argv))


def copy_quickstart(dest: Path) -> Path:
    """The quickstart manifests and data in a scratch directory (tests write new manifests next to them)."""
    shutil.copytree(QS, dest, ignore=shutil.ignore_patterns("out", "*.sh"))
    return dest


def with_percentage(ws: Path, source: str, pct: float, out: str) -> Path:
    doc = yaml.safe_load((ws / source).read_text())
    doc["spec"]["rollout"]["percentage"] = pct
    path = ws / out
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def add_precomputed_index(ws: Path, store: Path, name: str = "pre") -> None:
    """An index of precomputed vectors with no query embedder: it takes vectors only."""
    ids = [json.loads(l)["id"] for l in (ws / "data" / "corpus.jsonl").read_text().splitlines() if l.strip()]
    rng = np.random.default_rng(0)
    np.save(ws / "pre-docs.npy", rng.normal(size=(len(ids), 16)).astype(np.float32))
    (ws / "pre-ids.txt").write_text("\n".join(ids) + "\n")
    doc = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": name},
           "spec": {"corpus": {"path": "data/corpus.jsonl", "idField": "id", "textFields": ["title", "text"]},
                    "model": {"provider": "precomputed", "name": "random", "version": "1", "dim": 16,
                              "options": {"vectors": "pre-docs.npy", "ids": "pre-ids.txt"}},
                    "index": {"version": "p1", "factory": "Flat", "metric": "cosine"}}}
    (ws / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    assert controller("reconcile", str(ws / f"{name}.yaml"), "--store", str(store)) == 0


@pytest.fixture(scope="session")
def built_store(tmp_path_factory) -> tuple[Path, Path]:
    """(workspace, store): quickstart v1 stable, v2 candidate at 25%, plus the precomputed index `pre`."""
    base = tmp_path_factory.mktemp("serve")
    ws = copy_quickstart(base / "ws")
    store = base / "store"
    assert controller("reconcile", str(ws / "v1.yaml"), "--store", str(store)) == 0
    assert controller("reconcile", str(ws / "v2-canary.yaml"), "--store", str(store)) == 0
    add_precomputed_index(ws, store)
    return ws, store


@pytest.fixture
def fresh_store(built_store, tmp_path) -> tuple[Path, Path]:
    """A private copy a test may change (routing, events)."""
    ws, store = built_store
    # without the events other tests' servers logged into the shared store
    shutil.copytree(store, tmp_path / "store", ignore=lambda d, names: ["events"] if Path(d) == store else [])
    return ws, tmp_path / "store"


class Server:
    """`controller serve --port 0` as a child process; `url` once /readyz says ready."""

    def __init__(self, store: Path, *extra: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # stderr to a file: an unread pipe would block the server once 64 KiB of log piled up
        self.log = store.parent / f"serve-{time.monotonic_ns()}.log"
        self._log_handle = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.cli.main", "serve", "--store", str(store), "--port", "0",
             "--poll", "0.1", "--log-level", "warning", *extra],
            stdout=subprocess.PIPE, stderr=self._log_handle, text=True, env=env, cwd=REPO)
        line = self.proc.stdout.readline()
        if not line.startswith("serving on "):
            self.proc.kill()
            raise RuntimeError(f"server did not start: {line!r} {self.stderr()}")
        self.url = line.split()[-1]
        self.client = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.proc.kill()
        self.proc.wait()
        raise RuntimeError(f"server never became ready: {self.stderr()}")

    def stderr(self) -> str:
        self._log_handle.flush()
        return self.log.read_text()[-3000:]

    def search(self, name: str = "quickstart", **body) -> httpx.Response:
        return self.client.post(f"/v1/indexes/{name}/search", json=body)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self._log_handle.close()
        return self.log.read_text()


@pytest.fixture
def serve():
    servers: list[Server] = []

    def start(store: Path, *extra: str) -> Server:
        server = Server(store, *extra)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
