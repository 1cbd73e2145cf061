"""`controller reconcile`, `query`, `serve`, `rollback` and history GC on pgvector and Qdrant, end to end.

A small quickstart corpus with the hashing embedder keeps these fast. Faults (wrong credentials, the
pgvector extension missing, a table replaced with other dimensions, a table or collection deleted
behind the controller's back) each stop the reconcile with one line naming the backend, exit code 1,
and v1 still stable in the store and behind the backend's native alias.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from controller.backends import _instances, get_backend
from controller.backends.base import BackendSettings, VersionRef
from controller.cli.main import main
from tests.helpers import V2_OPTIONS, manifest, workspace, write_manifest

V3_OPTIONS = {"wordNgrams": 1, "charNgrams": [3, 4], "seed": 3}
QUERY = "vector search index drift"


def backend_manifest(version: str, options: dict, backend: dict | None, **kw) -> dict:
    doc = manifest(version, options, gates=[{"metric": "ndcg@10", "min": 0.2}], **kw)
    doc["spec"]["index"] = {"version": version, "metric": "cosine", **({"backend": backend} if backend else {})}
    return doc


def reconcile(ws: Path, store: Path, doc: dict) -> int:
    path = write_manifest(ws, doc, f"{doc['spec']['index']['version']}.yaml")
    return main(["reconcile", str(path), "--store", str(store)])


def stable(store: Path, capsys) -> str | None:
    capsys.readouterr()
    assert main(["status", "qs", "--store", str(store), "-o", "json"]) == 0
    s = json.loads(capsys.readouterr().out)
    return (s.get("stable") or {}).get("version")


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return workspace(tmp_path, n_docs=200)


def v1_then_failing_v2(ws: Path, store: Path, capsys, backend: dict) -> list[str]:
    """v1 goes stable; the caller broke something; v2's reconcile fails: returns stderr's lines."""
    capsys.readouterr()
    assert reconcile(ws, store, backend_manifest("v2", V2_OPTIONS, backend)) == 1
    return capsys.readouterr().err.strip().splitlines()


def nothing_promoted(store: Path, capsys, backend_type: str) -> None:
    _instances.pop(backend_type, None)  # the fault's connection settings are gone: read the good ones again
    assert stable(store, capsys) == "v1"
    assert get_backend(backend_type).get_alias("qs") == "v1"


# --- faults through `controller reconcile` --------------------------------------------------------------

@pytest.fixture
def pg_v1(ws, tmp_path, pg_backend, capsys) -> Path:
    store = tmp_path / "store"
    assert reconcile(ws, store, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, {"type": "pgvector"})) == 0
    assert pg_backend.get_alias("qs") == "v1"
    return store


def _use_dsn(monkeypatch, dsn: str) -> None:
    instance = _instances.pop("pgvector", None)
    if instance is not None:
        instance.close()
    monkeypatch.setenv("CONTROLLER_PG_DSN", dsn)


def test_wrong_credentials(ws, pg_v1, pg_server, pg_backend, capsys, monkeypatch):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from controller.backends.pgvector import PgvectorBackend
    from controller.errors import BackendError

    if pg_server.pgdata is None:
        pytest.skip("an external server may trust every connection: wrong credentials cannot fail there")
    secret, wrong, role = "right-" + uuid.uuid4().hex, "wrong-" + uuid.uuid4().hex, "ctl_" + uuid.uuid4().hex[:6]
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'")
    pg_server.reload_hba(f"local all {role} scram-sha-256\nhost all {role} 127.0.0.1/32 scram-sha-256")
    bad = make_conninfo(**{**conninfo_to_dict(pg_server.dsn), "user": role, "password": wrong})
    deadline = time.monotonic() + 10  # pg_reload_conf() only signals the postmaster: wait until it applies
    while time.monotonic() < deadline:
        try:
            PgvectorBackend(dsn=bad, schema=pg_backend.schema).health()
        except BackendError:
            break
        time.sleep(0.2)
    _use_dsn(monkeypatch, bad)
    err = v1_then_failing_v2(ws, pg_v1, capsys, {"type": "pgvector"})
    assert len(err) == 1 and err[0].startswith("error: backend pgvector (CONTROLLER_PG_DSN): authentication failed")
    assert wrong not in err[0] and secret not in err[0]
    monkeypatch.setenv("CONTROLLER_PG_DSN", pg_server.dsn)
    nothing_promoted(pg_v1, capsys, "pgvector")


def test_extension_missing(ws, pg_v1, pg_server, capsys, monkeypatch):
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    db, role = "noext_" + uuid.uuid4().hex[:6], "plain_" + uuid.uuid4().hex[:6]
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    _use_dsn(monkeypatch, make_conninfo(**{**conninfo_to_dict(pg_server.dsn), "dbname": db, "user": role}))
    err = v1_then_failing_v2(ws, pg_v1, capsys, {"type": "pgvector"})
    assert len(err) == 1 and err[0].startswith("error: backend pgvector (extension vector): the pgvector extension "
                                               "is missing") and db in err[0]
    monkeypatch.setenv("CONTROLLER_PG_DSN", pg_server.dsn)
    nothing_promoted(pg_v1, capsys, "pgvector")


def test_dimension_mismatch_with_an_existing_table(ws, pg_v1, pg_backend, capsys):
    """v1's table replaced behind our back by one of vector(8): the golden comparison cannot read it."""
    import psycopg

    from controller.backends.pgvector import table_name

    table = f'"{pg_backend.schema}"."{table_name("qs", "v1")}"'
    with psycopg.connect(pg_backend.info.conninfo, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {table} DROP COLUMN embedding CASCADE")  # and the alias view
        conn.execute(f"ALTER TABLE {table} ADD COLUMN embedding vector(8)")
        conn.execute(f'UPDATE "{pg_backend.schema}".versions SET dim = 8 WHERE index = %s AND version = %s',
                     ("qs", "v1"))
    err = v1_then_failing_v2(ws, pg_v1, capsys, {"type": "pgvector"})
    assert len(err) == 1 and "backend pgvector (spec.model.dim)" in err[0] and "v2 has no verdict" in err[0]
    assert "vector(8)" in err[0] and "384" in err[0]
    nothing_promoted(pg_v1, capsys, "pgvector")


def test_table_deleted_behind_our_back(ws, pg_v1, pg_backend, capsys):
    import psycopg

    from controller.backends.pgvector import table_name

    with psycopg.connect(pg_backend.info.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{pg_backend.schema}"."{table_name("qs", "v1")}" CASCADE')
    err = v1_then_failing_v2(ws, pg_v1, capsys, {"type": "pgvector"})
    assert len(err) == 1 and "backend pgvector: table" in err[0] and "qs__v1" in err[0] and "is gone" in err[0]
    nothing_promoted(pg_v1, capsys, "pgvector")


def test_collection_deleted_behind_our_back(ws, tmp_path, qdrant_backend, capsys):
    store = tmp_path / "store"
    backend = {"type": "qdrant"}
    assert reconcile(ws, store, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, backend)) == 0
    qdrant = get_backend("qdrant")
    [collection] = [c.name for c in qdrant.client().get_collections().collections if "v1" in c.name]
    qdrant.client().delete_collection(collection)
    err = v1_then_failing_v2(ws, store, capsys, backend)
    assert len(err) == 1 and "backend qdrant" in err[0] and collection in err[0], err
    assert stable(store, capsys) == "v1"
    assert qdrant.get_alias("qs") in ("v1", None)  # Qdrant drops an alias with its collection


# --- crash mid-build on Qdrant ----------------------------------------------------------------------------

def test_qdrant_reconcile_removes_a_partial_collection_and_converges(ws, tmp_path, qdrant_backend, capsys):
    store = tmp_path / "store"
    backend = {"type": "qdrant"}
    assert reconcile(ws, store, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, backend)) == 0
    qdrant = get_backend("qdrant")
    # what a writer killed mid-fill leaves (tests/backends/test_qdrant.py kills a real one)
    writer = qdrant.create_version(VersionRef("qs", "v2", 384, "cosine", "crashed"), BackendSettings("qdrant", {}))
    writer.add(np.random.default_rng(0).normal(size=(50, 384)).astype(np.float32))
    assert qdrant.partial_versions("qs") == ["v2"] and qdrant.get_alias("qs") == "v1"
    assert reconcile(ws, store, backend_manifest("v2", V2_OPTIONS, backend)) == 0
    assert stable(store, capsys) == "v2" and qdrant.get_alias("qs") == "v2"
    assert qdrant.partial_versions("qs") == []
    docs = len((ws / "data" / "corpus.jsonl").read_text().splitlines())
    assert qdrant.open_version(VersionRef("qs", "v2", 384, "cosine", "x")).count() == docs


# --- query, serve, rollback and GC work unchanged on every backend ----------------------------------------

def query_hits(store: Path, capsys) -> tuple[str, list[tuple[str, float]]]:
    capsys.readouterr()
    assert main(["query", "qs", QUERY, "--store", str(store), "-k", "10", "--no-record", "-o", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    return out["version"], [(h["id"], h["score"]) for h in out["hits"]]


def serve_hits(store: Path) -> tuple[str, list[tuple[str, float]]]:
    from fastapi.testclient import TestClient

    from controller.serve.app import create_app

    with TestClient(create_app(store, record=False)) as client:
        deadline = time.monotonic() + 30  # the pool loads versions in the background, as `controller serve` does
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        response = client.post("/v1/indexes/qs/search", json={"query": QUERY, "k": 10})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["version"], [(h["id"], h["score"]) for h in body["hits"]]


def same_hits(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)


@pytest.mark.slow
def test_query_serve_rollback_and_gc_on_every_backend(ws, tmp_path, capsys, pg_backend, qdrant_backend):
    flat = tmp_path / "faiss"
    assert reconcile(ws, flat, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, None)) == 0
    _, want = query_hits(flat, capsys)
    assert len(want) == 10
    for kind in ("pgvector", "qdrant"):
        store, backend = tmp_path / kind, {"type": kind}
        assert reconcile(ws, store, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, backend, keep=2)) == 0
        version, hits = query_hits(store, capsys)
        assert version == "v1"
        same_hits(hits, want)
        version, hits = serve_hits(store)
        assert version == "v1"
        same_hits(hits, want)
        native = get_backend(kind)
        assert reconcile(ws, store, backend_manifest("v2", V2_OPTIONS, backend, keep=2)) == 0
        assert native.get_alias("qs") == "v2"
        assert main(["rollback", "qs", "--store", str(store)]) == 0
        assert stable(store, capsys) == "v1" and native.get_alias("qs") == "v1"
        assert query_hits(store, capsys)[0] == "v1"
        # v3 with history.keep 2: the oldest version leaves the store and the backend
        assert reconcile(ws, store, backend_manifest("v3", V3_OPTIONS, backend, keep=2)) == 0
        assert native.get_alias("qs") == "v3"
        kept = sorted(p.name for p in (store / "indexes" / "qs" / "versions").iterdir() if not p.name.startswith("."))
        assert len(kept) == 2 and "v3" in kept
        assert sorted(native.list_versions("qs")) == kept


def test_a_backend_that_does_not_hold_the_stable_version_keeps_no_alias(ws, tmp_path, capsys, pg_backend):
    """v1 in FAISS files, then the manifest moves to pgvector: its alias only ever names the stable version."""
    store = tmp_path / "store"
    assert reconcile(ws, store, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, None)) == 0
    failing = backend_manifest("v2", V2_OPTIONS, {"type": "pgvector"})
    failing["spec"]["checks"]["golden"]["gates"] = [{"metric": "ndcg@10", "min": 0.99}]
    capsys.readouterr()
    assert reconcile(ws, store, failing) == 3  # gates failed, rolled back: not an error about the alias
    assert "error" not in capsys.readouterr().err
    assert stable(store, capsys) == "v1" and pg_backend.get_alias("qs") is None
    assert reconcile(ws, store, backend_manifest("v3", V3_OPTIONS, {"type": "pgvector"})) == 0
    assert stable(store, capsys) == "v3" and pg_backend.get_alias("qs") == "v3"
    assert main(["rollback", "qs", "--store", str(store)]) == 0
    assert stable(store, capsys) == "v1" and pg_backend.get_alias("qs") is None


def test_a_stepped_rollout_promoted_by_the_verb_moves_the_native_alias(ws, tmp_path, capsys, pg_backend):
    store = tmp_path / "store"
    assert reconcile(ws, store, backend_manifest("v1", {"wordNgrams": 1, "seed": 1}, {"type": "pgvector"})) == 0
    stepped = backend_manifest("v2", V2_OPTIONS, {"type": "pgvector"})
    stepped["spec"]["rollout"] = {"steps": [{"setWeight": 20}, {"pause": {}}]}
    assert reconcile(ws, store, stepped) == 0
    assert pg_backend.get_alias("qs") == "v1"  # a canary at 20% is not the stable version
    assert main(["promote", "qs", "--full", "--store", str(store)]) == 0
    assert stable(store, capsys) == "v2" and pg_backend.get_alias("qs") == "v2"
