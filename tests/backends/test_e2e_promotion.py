"""SciFact MiniLM -> E5 promotion through `controller reconcile` with the vectors in pgvector and in Qdrant.

The same manifests as tests/e2e/test_scifact.py with ``spec.index.backend``: exact search gives the
golden metrics FAISS Flat gives (pinned there to 1e-9), the backend's native alias follows the
promotion, a partial build left by a crash is removed by the next reconcile, and a fault stops the
reconcile with one line naming the backend and the setting, exit code 1 and nothing promoted.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.backends import get_backend
from controller.backends.base import BackendSettings, VersionRef
from controller.cli.main import main
from tests.e2e.test_scifact import scifact_manifest

pytestmark = [pytest.mark.scifact, pytest.mark.slow]

#: tests/e2e/test_scifact.py pins these for FAISS Flat
MINILM_NDCG, E5_NDCG = 0.6450816521455774, 0.6549494614893412


def manifest(scifact: Path, folder: str, version: str, gates: list[dict], backend: dict) -> dict:
    doc = scifact_manifest(scifact, folder, version, gates)
    doc["spec"]["index"] = {"version": version, "metric": "cosine", "backend": backend}
    return doc


def status(store: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["status", "scifact", "--store", str(store), "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def reconcile(path: Path, doc: dict, store: Path, scifact: Path) -> int:
    path.write_text(yaml.safe_dump(doc))
    return main(["reconcile", str(path), "--store", str(store), "--data-root", str(scifact)])


def promote(scifact: Path, tmp_path: Path, capsys, backend: dict, ann_gate: bool = False) -> dict:
    """v1 MiniLM then v2 E5; golden metrics equal FAISS Flat's to 1e-6 when the search is exact."""
    tolerance = 0.01 if ann_gate else 1e-6  # an HNSW graph may rank differently from exact search
    store = tmp_path / "store"
    gates = [{"metric": "ndcg@10", "min": 0.6}] + ([{"metric": "annRecall@10", "min": 0.9}] if ann_gate else [])
    assert reconcile(tmp_path / "v1.yaml", manifest(scifact, "all-minilm-l6-v2", "v1", gates, backend),
                     store, scifact) == 0
    s = status(store, capsys)
    assert s["stable"]["version"] == "v1" and s["phase"] == "Healthy"
    assert s["metrics"]["ndcg@10"] == pytest.approx(MINILM_NDCG, abs=tolerance)
    assert get_backend(backend["type"]).get_alias("scifact") == "v1"
    first = s
    gates = [{"metric": "ndcg@10", "maxDrop": 0.02}] + ([{"metric": "annRecall@10", "min": 0.9}] if ann_gate else [])
    assert reconcile(tmp_path / "v2.yaml", manifest(scifact, "multilingual-e5-small-q4", "v2", gates, backend),
                     store, scifact) == 0
    s = status(store, capsys)
    assert s["stable"]["version"] == "v2" and s["candidate"] is None and s["phase"] == "Healthy"
    assert s["metrics"]["ndcg@10"] == pytest.approx(E5_NDCG, abs=tolerance)
    drift = {d["statistic"]: d for d in s["drift"]}
    assert drift["cosineShift"]["drifted"]
    assert get_backend(backend["type"]).get_alias("scifact") == "v2"
    assert set(get_backend(backend["type"]).list_versions("scifact")) == {"v1", "v2"}
    print(f"{backend}: v1 {first['metrics']}\n  v2 {s['metrics']}")
    return s


def test_promotion_on_pgvector_exact(scifact, tmp_path, capsys, pg_backend):
    promote(scifact, tmp_path, capsys, {"type": "pgvector"})
    # the table names its documents itself: other tools can read it without the store
    import psycopg

    from controller.backends.pgvector import table_name

    version_dir = tmp_path / "store" / "indexes" / "scifact" / "versions" / "v2"
    ids = json.loads((version_dir / "ids.json").read_text())
    hashes = json.loads((version_dir / "hashes.json").read_text())
    with psycopg.connect(pg_backend.info.conninfo) as conn:
        rows = conn.execute(f'SELECT row, id, content_hash FROM "{pg_backend.schema}".'
                            f'"{table_name("scifact", "v2")}" ORDER BY row').fetchall()
    assert [r[0] for r in rows] == list(range(len(ids)))
    assert [r[1] for r in rows] == ids and [r[2] for r in rows] == hashes


def test_promotion_on_pgvector_hnsw_reports_and_gates_ann_recall(scifact, tmp_path, capsys, pg_backend):
    s = promote(scifact, tmp_path, capsys, {"type": "pgvector", "hnsw": {"m": 16, "efConstruction": 64,
                                                                          "efSearch": 100}}, ann_gate=True)
    ann = [g for g in s["gates"] if g["metric"] == "annRecall@10"]
    assert ann and ann[0]["passed"] and 0.9 <= ann[0]["value"] < 1.0


def test_promotion_on_qdrant(scifact, tmp_path, capsys, qdrant_backend):
    promote(scifact, tmp_path, capsys, {"type": "qdrant", "hnswConfig": {"m": 16, "efConstruct": 100}})


def test_reconcile_removes_a_partial_build_and_converges(scifact, tmp_path, capsys, pg_backend):
    store = tmp_path / "store"
    v1 = manifest(scifact, "all-minilm-l6-v2", "v1", [{"metric": "ndcg@10", "min": 0.6}], {"type": "pgvector"})
    assert reconcile(tmp_path / "v1.yaml", v1, store, scifact) == 0
    # what a writer killed mid-fill leaves (tests/backends/test_pgvector.py kills a real one)
    writer = pg_backend.create_version(VersionRef("scifact", "v2", 384, "cosine", "crashed"),
                                       BackendSettings("pgvector", {}))
    writer.add(np.random.default_rng(0).normal(size=(1000, 384)).astype(np.float32))
    assert pg_backend.partial_versions("scifact") == ["v2"]
    assert pg_backend.get_alias("scifact") == "v1"
    v2 = manifest(scifact, "multilingual-e5-small-q4", "v2", [{"metric": "ndcg@10", "maxDrop": 0.02}],
                  {"type": "pgvector"})
    assert reconcile(tmp_path / "v2.yaml", v2, store, scifact) == 0
    s = status(store, capsys)
    assert s["stable"]["version"] == "v2" and s["metrics"]["ndcg@10"] == pytest.approx(E5_NDCG, abs=1e-6)
    assert pg_backend.partial_versions("scifact") == []
    assert pg_backend.open_version(VersionRef("scifact", "v2", 384, "cosine", "x")).count() == 5183


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_database_stops_the_reconcile_with_nothing_promoted(scifact, tmp_path, capsys, pg_backend,
                                                                        monkeypatch):
    store = tmp_path / "store"
    v1 = manifest(scifact, "all-minilm-l6-v2", "v1", [{"metric": "ndcg@10", "min": 0.6}], {"type": "pgvector"})
    assert reconcile(tmp_path / "v1.yaml", v1, store, scifact) == 0
    from controller.backends import _instances

    _instances.pop("pgvector").close()
    secret = "pw-never-shown"
    monkeypatch.setenv("CONTROLLER_PG_DSN", f"postgresql://ctl:{secret}@127.0.0.1:{_closed_port()}/x?connect_timeout=3")
    capsys.readouterr()
    v2 = manifest(scifact, "multilingual-e5-small-q4", "v2", [{"metric": "ndcg@10", "maxDrop": 0.02}],
                  {"type": "pgvector"})
    assert reconcile(tmp_path / "v2.yaml", v2, store, scifact) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: backend pgvector (CONTROLLER_PG_DSN): cannot reach")
    assert secret not in err[0]
    _instances.pop("pgvector", None)
    monkeypatch.setenv("CONTROLLER_PG_DSN", pg_backend.info.conninfo)
    assert status(store, capsys)["stable"]["version"] == "v1"
    assert pg_backend.get_alias("scifact") == "v1"
