"""Backend settings an audit found accepted, or refused only by a traceback: each is now one named line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.backends.base import BackendSettings
from controller.errors import BackendError, InvalidInput
from tests.backends.conftest import require_extra
from tests.helpers import manifest, workspace, write_manifest

REPO = Path(__file__).resolve().parents[2]


# ----- qdrant ---------------------------------------------------------------------------------

@pytest.mark.parametrize("quantization,field", [
    ({"scalar": [1]}, "spec.index.backend.quantization.scalar"),
    ({"scalar": 5}, "spec.index.backend.quantization.scalar"),
    ({"binary": "abc"}, "spec.index.backend.quantization.binary"),
    ({"binary": True}, "spec.index.backend.quantization.binary"),
])
def test_qdrant_quantization_that_is_not_a_mapping_is_invalid_input(quantization, field):
    from controller.backends.qdrant import index_params

    with pytest.raises(InvalidInput) as err:
        index_params({"quantization": quantization})
    assert err.value.field == field and str(err.value).startswith(f"field {field}:")


def test_qdrant_empty_quantization_still_means_the_defaults():
    from controller.backends.qdrant import index_params

    assert index_params({"quantization": {"binary": None}}) == {"quantization": {"binary": {}}}
    assert index_params({"quantization": {"scalar": {}}}) == {"quantization": {"scalar": {}}}


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999", "not a url", "http://127.0.0.1:abc"])
def test_qdrant_url_that_cannot_be_parsed_is_a_backend_error(monkeypatch, url):
    require_extra("qdrant_client", "qdrant")
    from controller.backends.qdrant import QdrantBackend

    monkeypatch.setenv("QDRANT_URL", url)
    with pytest.raises(BackendError) as err:
        QdrantBackend().client()
    assert err.value.setting == "QDRANT_URL" and repr(url) in str(err.value)
    assert "\n" not in str(err.value)


def test_qdrant_url_credentials_are_not_repeated(monkeypatch):
    require_extra("qdrant_client", "qdrant")
    from controller.backends.qdrant import QdrantBackend

    with pytest.raises(BackendError) as err:
        QdrantBackend(url="http://bob:s3cretPW@127.0.0.1:99999").client()
    assert "s3cretPW" not in str(err.value) and "QDRANT_URL" in str(err.value)


def test_dry_run_refuses_bad_qdrant_quantization_with_exit_2(tmp_path):
    ws = workspace(tmp_path, n_docs=10)
    doc = manifest("v1")
    doc["spec"]["index"] = {"version": "v1", "metric": "cosine",
                            "backend": {"type": "qdrant", "quantization": {"scalar": [1]}}}
    path = write_manifest(ws, doc)
    out = subprocess.run([sys.executable, "-m", "controller.cli.main", "reconcile", str(path), "--store",
                          str(tmp_path / "store"), "--dry-run"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert out.returncode == 2, out.stderr
    assert "field spec.index.backend.quantization.scalar" in out.stderr and str(path) in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


# ----- pgvector -------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5"])
def test_pg_pool_size_must_be_a_positive_integer(monkeypatch, value):
    require_extra("psycopg", "pgvector")
    from controller.backends.pgvector import PgvectorBackend

    monkeypatch.setenv("CONTROLLER_PG_POOL_SIZE", value)
    with pytest.raises(BackendError) as err:
        PgvectorBackend(dsn="host=/nowhere", schema="s")
    assert err.value.setting == "CONTROLLER_PG_POOL_SIZE" and repr(value) in str(err.value)


def test_pg_pool_size_default_and_explicit(monkeypatch):
    require_extra("psycopg", "pgvector")
    from controller.backends.pgvector import PgvectorBackend

    monkeypatch.delenv("CONTROLLER_PG_POOL_SIZE", raising=False)
    assert PgvectorBackend(dsn="host=/nowhere", schema="s")._pool_size == 8
    monkeypatch.setenv("CONTROLLER_PG_POOL_SIZE", "3")
    assert PgvectorBackend(dsn="host=/nowhere", schema="s")._pool_size == 3


@pytest.mark.parametrize("params,field", [
    ({"hnsw": {"m": 40}}, "spec.index.backend.hnsw.m"),                       # default efConstruction 64 < 80
    ({"hnsw": {"efConstruction": 8}}, "spec.index.backend.hnsw.efConstruction"),  # default m 16: needs 32
    ({"maintenanceWorkMem": "0kB"}, "spec.index.backend.maintenanceWorkMem"),
    ({"maintenanceWorkMem": "1023kB"}, "spec.index.backend.maintenanceWorkMem"),
    ({"maintenanceWorkMem": "0MB"}, "spec.index.backend.maintenanceWorkMem"),
])
def test_pg_rules_use_pgvectors_defaults_and_postgres_minimum(params, field):
    require_extra("psycopg", "pgvector")
    from controller.backends.pgvector import PgvectorBackend

    with pytest.raises(InvalidInput) as err:
        PgvectorBackend(dsn="host=/nowhere", schema="s").validate(BackendSettings("pgvector", params), 8, "cosine")
    assert err.value.field == field and str(err.value).startswith(f"field {field}:")


def test_pg_settings_at_the_limits_still_pass():
    require_extra("psycopg", "pgvector")
    from controller.backends.pgvector import index_params

    assert index_params({"hnsw": {"m": 32}})["m"] == 32                       # 2 * 32 == 64, the default
    assert index_params({"hnsw": {"efConstruction": 32}})["efConstruction"] == 32
    assert index_params({"hnsw": {"m": 40, "efConstruction": 80}})["m"] == 40
    assert index_params({"maintenanceWorkMem": "1024kB"})["maintenanceWorkMem"] == "1024kB"
    assert index_params({"maintenanceWorkMem": "1 MB"})["maintenanceWorkMem"] == "1MB"
