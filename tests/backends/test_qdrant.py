"""Qdrant backend through qdrant-client's local mode (a Qdrant server cannot run here: no binary on PyPI).

Local mode is exact brute force and locks its storage folder to one process, so: annRecall is 1 by
construction here, and the crash test closes the parent's client before the filler opens the folder.
Local mode on a path commits every point to SQLite (slow on a busy disk): SciFact runs in ``:memory:``.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid

import numpy as np
import pytest

from controller.backends.base import BackendSettings, VersionRef
from controller.errors import BackendError, InvalidInput, NotFound
from tests.backends.conftest import require_extra
from tests.backends.scifact_eval import DEPTH, PUBLISHED, faiss_flat, ndcg_at_10, overlap_at

require_extra("qdrant_client", "qdrant")

from controller.backends.qdrant import QdrantBackend, collection_name  # noqa: E402

PLAIN = BackendSettings("qdrant", {})
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ref(index: str, version: str, dim: int, metric: str = "cosine") -> VersionRef:
    return VersionRef(index=index, version=version, dim=dim, metric=metric, fingerprint="fp-1")


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def build(backend, r: VersionRef, vectors: np.ndarray, settings: BackendSettings = PLAIN) -> None:
    writer = backend.create_version(r, settings)
    writer.add(vectors)
    writer.finish()


@pytest.mark.scifact
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_scifact_exact_search_equals_faiss_flat(qdrant_backend, scifact, scifact_vectors, model):
    data = scifact_vectors(model)
    r = ref("scifact", model, data.docs.shape[1])
    writer = qdrant_backend.create_version(r, BackendSettings("qdrant", {"hnswConfig": {"m": 16, "efSearch": 128}}))
    ids = (scifact / "doc_ids.txt").read_text().split()
    for start in range(0, len(data.docs), 2000):
        writer.add(data.docs[start:start + 2000], ids=ids[start:start + 2000])
    writer.finish()
    version = qdrant_backend.open_version(r)
    scores, rows = version.exact_search(data.queries, DEPTH)
    ref_scores, ref_rows = faiss_flat(data.docs, data.queries)
    ours, theirs = ndcg_at_10(scifact, rows, scores), ndcg_at_10(scifact, ref_rows, ref_scores)
    print(f"qdrant exact {model}: nDCG@10 {ours:.6f}, FAISS Flat {theirs:.6f}")
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours == pytest.approx(PUBLISHED[model], abs=5e-5)
    assert np.abs(scores[:, :10] - ref_scores[:, :10]).max() < 1e-5
    ann_scores, ann_rows = version.search(data.queries[:50], 10)
    recall = overlap_at(ann_rows, rows[:50], 10)
    print(f"qdrant local mode annRecall@10 {recall:.4f} (local mode searches exactly)")
    assert recall == 1.0
    assert version.count() == len(data.docs)
    back = version.vectors()
    assert np.allclose(back, data.docs, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_metrics_and_raw_vectors(qdrant_backend, metric):
    docs, queries = synthetic(400, 8, 1) * 3, synthetic(5, 8, 2)
    r = ref("metrics", metric, 8, metric)
    build(qdrant_backend, r, docs)
    version = qdrant_backend.open_version(r)
    scores, rows = version.exact_search(queries, 7)
    d, q = docs, queries
    if metric == "cosine":
        d, q = d / np.linalg.norm(d, axis=1, keepdims=True), q / np.linalg.norm(q, axis=1, keepdims=True)
    want = q @ d.T if metric != "l2" else -((q[:, None, :] - d[None]) ** 2).sum(-1)
    top = np.argsort(-want, axis=1, kind="stable")[:, :7]
    assert np.array_equal(rows, top)
    assert np.allclose(scores, np.take_along_axis(want, top, axis=1), rtol=1e-4, atol=1e-4)
    assert np.allclose(version.vectors(), docs, rtol=1e-6, atol=1e-6)  # raw norms back, cosine included


def test_padding_when_fewer_points_than_k(qdrant_backend):
    r = ref("pad", "v1", 4)
    build(qdrant_backend, r, synthetic(3, 4, 0))
    scores, rows = qdrant_backend.open_version(r).search(synthetic(2, 4, 1), 5)
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()


def test_alias_switch_and_guards(qdrant_backend):
    build(qdrant_backend, ref("al", "v1", 4), synthetic(10, 4, 0))
    writer = qdrant_backend.create_version(ref("al", "v2", 4), PLAIN)
    writer.add(synthetic(10, 4, 1))
    with pytest.raises(BackendError, match=r"^backend qdrant \(alias\).*never finished"):
        qdrant_backend.set_alias("al", "v2")
    writer.finish()
    assert qdrant_backend.get_alias("al") is None
    qdrant_backend.set_alias("al", "v1")
    assert qdrant_backend.get_alias("al") == "v1"
    qdrant_backend.set_alias("al", "v2")  # delete + create in one update_collection_aliases request
    assert qdrant_backend.get_alias("al") == "v2"
    client = qdrant_backend.client()
    assert [a.collection_name for a in client.get_aliases().aliases if a.alias_name == "al"] == ["al__v2"]
    # a client querying the alias by name reaches the aliased collection
    hits = client.query_points("al", query=synthetic(1, 4, 1)[0].tolist(), limit=1).points
    assert hits[0].id in range(10)
    with pytest.raises(BackendError, match="alias 'al' serves"):
        qdrant_backend.delete_version(ref("al", "v2", 4))
    qdrant_backend.set_alias("al", None)
    qdrant_backend.delete_version(ref("al", "v2", 4))
    qdrant_backend.delete_version(ref("al", "v2", 4))  # idempotent
    assert qdrant_backend.list_versions("al") == ["v1"]


FILLER = """
import time, numpy as np
from controller.backends import get_backend
from controller.backends.base import BackendSettings, VersionRef
backend = get_backend("qdrant")
writer = backend.create_version(VersionRef("crash", "v2", 8, "cosine", "fp-2"), BackendSettings("qdrant", {}))
rng = np.random.default_rng(5)
for i in range(1000):
    writer.add(rng.normal(size=(10, 8)).astype(np.float32))
    print("filled", (i + 1) * 10, flush=True)
"""


def test_sigkill_mid_fill_leaves_a_listed_partial_that_delete_cleans(tmp_path, monkeypatch):
    path = str(tmp_path / "qdrant")
    monkeypatch.setenv("QDRANT_PATH", path)
    for name in ("QDRANT_URL", "QDRANT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    backend = QdrantBackend()
    build(backend, ref("crash", "v1", 8), synthetic(20, 8, 1))
    backend.set_alias("crash", "v1")
    backend.close()  # local mode: one process per storage folder
    proc = subprocess.Popen([sys.executable, "-c", FILLER], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert all(line.startswith("filled") for line in lines), lines
        with pytest.raises(BackendError) as err:  # the folder is the filler's while it runs
            QdrantBackend().health()
        assert str(err.value).startswith("backend qdrant (QDRANT_PATH): local storage") and "server" in str(err.value)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    backend = QdrantBackend()
    try:
        partial = ref("crash", "v2", 8)
        assert backend.get_alias("crash") == "v1"
        assert backend.list_versions("crash") == ["v1", "v2"]
        assert backend.partial_versions("crash") == ["v2"]
        with pytest.raises(NotFound, match="never finished"):
            backend.open_version(partial)
        with pytest.raises(BackendError, match="never finished"):
            backend.set_alias("crash", "v2")
        backend.delete_version(partial)
        assert backend.list_versions("crash") == ["v1"]
        fresh = synthetic(30, 8, 2)
        build(backend, partial, fresh)
        backend.set_alias("crash", "v2")
        assert backend.open_version(partial).count() == 30
        assert backend.get_alias("crash") == "v2"
    finally:
        backend.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_names_the_url_not_the_key():
    key = "key-" + uuid.uuid4().hex
    backend = QdrantBackend(url=f"http://127.0.0.1:{_closed_port()}", api_key=key)
    with pytest.raises(BackendError) as err:
        backend.health()
    text = str(err.value)
    assert text.startswith("backend qdrant (QDRANT_URL): cannot reach Qdrant at http://127.0.0.1:")
    assert "\n" not in text and key not in text


def test_refused_api_key_names_the_key_setting():
    """A loopback HTTP server answering 401 as Qdrant does for a wrong key (no Qdrant server binary here)."""

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = b'{"status":{"error":"Must provide an API key or an Authorization bearer token"}}'
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    key = "key-" + uuid.uuid4().hex
    try:
        with pytest.raises(BackendError) as err:
            QdrantBackend(url=f"http://127.0.0.1:{server.server_address[1]}", api_key=key).health()
    finally:
        server.shutdown()
    text = str(err.value)
    assert text.startswith("backend qdrant (QDRANT_API_KEY): Qdrant at") and "HTTP 401" in text
    assert key not in text


def test_nothing_configured(monkeypatch):
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "QDRANT_PATH"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(BackendError, match=r"^backend qdrant \(QDRANT_URL\): no Qdrant configured"):
        QdrantBackend().health()


def test_collection_deleted_behind_our_back(qdrant_backend):
    r = ref("gone", "v1", 4)
    build(qdrant_backend, r, synthetic(10, 4, 0))
    version = qdrant_backend.open_version(r)
    qdrant_backend.client().delete_collection(collection_name("gone", "v1"))
    with pytest.raises(NotFound) as err:
        version.search(synthetic(1, 4, 1), 3)
    assert str(err.value) == "backend qdrant: collection gone__v1 does not exist (deleted outside the controller?)"
    with pytest.raises(NotFound, match="^backend qdrant: collection gone__v1 does not exist"):
        qdrant_backend.open_version(r)


def test_dimension_mismatch_with_an_existing_collection(qdrant_backend):
    build(qdrant_backend, ref("dims", "v1", 8), synthetic(5, 8, 0))
    with pytest.raises(BackendError, match=r"^backend qdrant \(spec.model.dim\): collection dims__v1 already holds 8"):
        qdrant_backend.create_version(ref("dims", "v1", 16), PLAIN)
    with pytest.raises(BackendError, match=r"^backend qdrant \(spec.model.dim\)"):
        qdrant_backend.open_version(ref("dims", "v1", 16))
    with pytest.raises(BackendError, match=r"^backend qdrant \(spec.index.version\).*already exists"):
        qdrant_backend.create_version(ref("dims", "v1", 8), PLAIN)


@pytest.mark.parametrize("params,field", [
    ({"hnswConfig": {"m": 1}}, "spec.index.backend.hnswConfig.m"),
    ({"hnswConfig": {"ef": 1}}, "spec.index.backend.hnswConfig.ef"),
    ({"hnswConfig": 16}, "spec.index.backend.hnswConfig"),
    ({"quantization": {"product": {}}}, "spec.index.backend.quantization"),
    ({"quantization": {"scalar": {"quantile": 2}}}, "spec.index.backend.quantization.scalar.quantile"),
    ({"factory": "HNSW32"}, "spec.index.backend.factory"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(InvalidInput) as err:
        QdrantBackend(path=":memory:").validate(BackendSettings("qdrant", params), 8, "cosine")
    assert err.value.field == field


def test_quantized_hnsw_collection_builds_and_searches(qdrant_backend):
    settings = BackendSettings("qdrant", {"hnswConfig": {"m": 16, "efConstruct": 100, "efSearch": 64},
                                          "quantization": {"scalar": {"quantile": 0.99, "rescore": True}}})
    r = ref("quant", "v1", 8)
    build(qdrant_backend, r, synthetic(200, 8, 0), settings)
    info = qdrant_backend.client().get_collection(collection_name("quant", "v1"))
    assert info.config.metadata["controller_state"] == "ready"
    assert '"efSearch": 64' in info.config.metadata["controller_params"]
    _, rows = qdrant_backend.open_version(r).search(synthetic(3, 8, 1), 5)
    assert (rows >= 0).all()
