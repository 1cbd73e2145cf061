"""PostgreSQL + pgvector: one table per version, the alias is a view repointed in one transaction.

Layout (schema ``$CONTROLLER_PG_SCHEMA``, default ``embedding_index``):

* ``versions``: the catalogue, one row per version with its state (``building`` until ``finish``
  commits, then ``ready``), table name, dim, metric, fingerprint and index parameters. A writer
  killed mid-fill leaves a ``building`` row and a partial table: ``list_versions`` reports it,
  ``open_version`` and ``set_alias`` refuse it, ``delete_version`` drops both.
* one table per version: ``row int4 primary key`` (row number = position in the store's ids.json),
  ``id text``, ``content_hash text``, ``embedding vector(dim)`` (raw vectors as added),
  ``fingerprint text`` (the model fingerprint, a column default so COPY does not resend it).
  Rows arrive by binary COPY in batches; the primary key and the HNSW/IVFFlat index are built
  after the load, in the transaction that marks the version ``ready``.
* ``aliases`` plus one view per index, named like the index: ``SELECT version, row, id,
  content_hash, embedding, fingerprint FROM <the version's table>``. ``set_alias`` replaces the
  view and the routing row in one transaction, so a client querying the view sees the old or
  the new version, never a mix.

Connection: ``$CONTROLLER_PG_DSN`` (a libpq connection string or URI), else libpq's own ``PG*``
variables (PGHOST, PGUSER, PGPASSWORD, PGDATABASE, ...). In operator mode mount a Secret as
these variables. Messages name the variable, the host and the user, never the password.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import struct
import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Iterator, Mapping, Sequence

import numpy as np

from controller.backends.base import BackendSettings, Capabilities, Metric, VersionRef, check_chunk
from controller.errors import BackendError, InvalidInput, NotFound

if TYPE_CHECKING:
    import psycopg

NAME = "pgvector"
DSN_ENV = "CONTROLLER_PG_DSN"
SCHEMA_ENV = "CONTROLLER_PG_SCHEMA"
POOL_ENV = "CONTROLLER_PG_POOL_SIZE"
DEFAULT_SCHEMA = "embedding_index"
FIELD = "spec.index.backend"

#: pgvector's limit for HNSW/IVFFlat on the ``vector`` type, and for hnsw.ef_search.
MAX_INDEXED_DIM = 2000
MAX_EF_SEARCH = 1000
MAX_DIM = 16000
#: PostgreSQL truncates identifiers longer than this (bytes).
MAX_IDENT = 63
COPY_BATCH = 5000

OPS = {"cosine": "vector_cosine_ops", "ip": "vector_ip_ops", "l2": "vector_l2_ops"}
DISTANCE_OP = {"cosine": "<=>", "ip": "<#>", "l2": "<->"}

PARAM_KEYS = {"hnsw": {"m", "efConstruction", "efSearch"}, "ivfflat": {"lists", "probes"}}
TOP_KEYS = {"type", "hnsw", "ivfflat", "maintenanceWorkMem"}
_MEM_RE = re.compile(r"^([0-9]+)\s*(kB|MB|GB)$")
_MEM_KB = {"kB": 1, "MB": 1024, "GB": 1024 * 1024}
MIN_MAINTENANCE_KB = 1024
#: pgvector's own values for what a manifest leaves out (hnsw.m, hnsw.ef_construction)
HNSW_DEFAULTS = {"m": 16, "efConstruction": 64}

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_COPY_TRAILER = struct.pack(">h", -1)


def _psycopg():
    try:
        import psycopg
    except ImportError as exc:
        raise BackendError(NAME, "psycopg is not installed: pip install 'embedding-index-controller[pgvector]'",
                           setting="python package psycopg") from exc
    return psycopg


# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------

def index_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The validated index part of ``spec.index.backend`` in one canonical form (stored in the catalogue)."""
    unknown = sorted(set(params) - TOP_KEYS)
    if unknown:
        raise InvalidInput(f"unknown pgvector setting {unknown[0]!r}; known: {', '.join(sorted(TOP_KEYS - {'type'}))}",
                           field=f"{FIELD}.{unknown[0]}", value=unknown[0])
    kinds = [k for k in PARAM_KEYS if params.get(k) is not None]
    if len(kinds) > 1:
        raise InvalidInput("pgvector takes one index kind: hnsw or ivfflat, not both",
                           field=f"{FIELD}.ivfflat", value="hnsw+ivfflat")
    out: dict[str, Any] = {"kind": kinds[0] if kinds else "exact"}
    if kinds:
        kind = kinds[0]
        given = params[kind]
        if not isinstance(given, Mapping):
            raise InvalidInput(f"{kind} must be a mapping such as {{m: 16, efConstruction: 64}}",
                               field=f"{FIELD}.{kind}", value=given)
        bad = sorted(set(given) - PARAM_KEYS[kind])
        if bad:
            raise InvalidInput(f"unknown {kind} parameter {bad[0]!r}; known: {', '.join(sorted(PARAM_KEYS[kind]))}",
                               field=f"{FIELD}.{kind}.{bad[0]}", value=bad[0])
        limits = {"m": (2, 100), "efConstruction": (4, 1000), "efSearch": (1, MAX_EF_SEARCH),
                  "lists": (1, 32768), "probes": (1, 32768)}
        for key, value in given.items():
            low, high = limits[key]
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidInput(f"{kind}.{key} must be an integer in [{low}, {high}]",
                                   field=f"{FIELD}.{kind}.{key}", value=value)
            out[key] = value
        if kind == "hnsw":
            _check_ef_construction(out)
    mem = params.get("maintenanceWorkMem")
    if mem is not None:
        out["maintenanceWorkMem"] = _maintenance_work_mem(mem)
    return out


def _check_ef_construction(out: Mapping[str, Any]) -> None:
    """pgvector refuses ef_construction < 2 * m at CREATE INDEX; a value not given is pgvector's default."""
    m = out.get("m", HNSW_DEFAULTS["m"])
    ef = out.get("efConstruction", HNSW_DEFAULTS["efConstruction"])
    if ef >= 2 * m:
        return
    given = "efConstruction" if "efConstruction" in out else "m"
    other = "m" if given == "efConstruction" else "efConstruction"
    note = "" if other in out else f" ({other} not given: pgvector's default {HNSW_DEFAULTS[other]})"
    raise InvalidInput(f"hnsw.efConstruction ({ef}) must be at least 2 * m ({m}), pgvector's rule{note}",
                       field=f"{FIELD}.hnsw.{given}", value=out[given])


def _maintenance_work_mem(mem: Any) -> str:
    """'512MB' in canonical form; PostgreSQL refuses maintenance_work_mem below 1024kB."""
    match = _MEM_RE.match(mem.strip()) if isinstance(mem, str) else None
    if match is None:
        raise InvalidInput("maintenanceWorkMem must look like '512MB' (kB, MB or GB)",
                           field=f"{FIELD}.maintenanceWorkMem", value=mem)
    if int(match.group(1)) * _MEM_KB[match.group(2)] < MIN_MAINTENANCE_KB:
        raise InvalidInput("maintenanceWorkMem must be at least 1MB (PostgreSQL's minimum, 1024kB)",
                           field=f"{FIELD}.maintenanceWorkMem", value=mem)
    return mem.strip().replace(" ", "")


def _pool_size_from_env() -> int:
    """$CONTROLLER_PG_POOL_SIZE, default 8: a positive integer."""
    text = os.environ.get(POOL_ENV) or "8"
    try:
        size = int(text)
    except ValueError:
        size = 0
    if size <= 0:
        raise BackendError(NAME, f"{POOL_ENV}={text[:40]!r} must be a positive integer (connections per "
                           "process, default 8)", setting=POOL_ENV)
    return size


def table_name(index: str, version: str) -> str:
    """``<index>__<version>``, shortened with a hash when PostgreSQL would truncate it."""
    return _ident_for(f"{index}__{version}")


def _ident_for(name: str) -> str:
    if len(name.encode()) <= MAX_IDENT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return name.encode()[:MAX_IDENT - 13].decode(errors="ignore") + "_" + digest


# --------------------------------------------------------------------------------------------
# Connections
# --------------------------------------------------------------------------------------------

class _Conninfo:
    """The connection string, where it came from, and what may be shown of it."""

    def __init__(self, dsn: str | None) -> None:
        psycopg = _psycopg()
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        if dsn is None:
            dsn = os.environ.get(DSN_ENV)
            self.setting = DSN_ENV if dsn else "PG* environment variables"
        else:
            self.setting = DSN_ENV
        dsn = dsn or ""
        try:
            parts = conninfo_to_dict(dsn)
        except psycopg.ProgrammingError as exc:
            # the parser's message can quote the string, and so the password: say only where it is wrong
            raise BackendError(NAME, "the connection string cannot be parsed (expected 'postgresql://user@host/db' "
                               "or 'host=... dbname=...')", setting=self.setting) from None
        self.password = str(parts.get("password") or os.environ.get("PGPASSWORD") or "")
        extra = {"application_name": "embedding-index-controller"}
        if "connect_timeout" not in parts and not os.environ.get("PGCONNECT_TIMEOUT"):
            extra["connect_timeout"] = "10"
        self.conninfo = make_conninfo(dsn, **{k: v for k, v in extra.items() if k not in parts})
        env = os.environ
        self.host = str(parts.get("host") or env.get("PGHOST") or "localhost")
        self.port = str(parts.get("port") or env.get("PGPORT") or "5432")
        self.user = str(parts.get("user") or env.get("PGUSER") or "")
        self.dbname = str(parts.get("dbname") or env.get("PGDATABASE") or self.user)

    def where(self) -> str:
        who = f"user {self.user!r}, " if self.user else ""
        return f"{who}database {self.dbname!r} at {self.host}:{self.port}"

    def scrub(self, text: str) -> str:
        """One line, without the password even if a server or libpq echoed it."""
        text = " ".join(str(text).split())
        if self.password:
            text = text.replace(self.password, "***")
        return text


class _Pool:
    """A few connections reused across threads; each borrower gets one connection to itself."""

    def __init__(self, connect, size: int) -> None:
        self._connect = connect
        self._idle: queue.LifoQueue = queue.LifoQueue()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        self._slots.acquire()
        conn = None
        try:
            try:
                conn = self._idle.get_nowait()
            except queue.Empty:
                conn = self._connect()
            yield conn
        except BaseException:
            if conn is not None:
                conn.close()  # a failed connection may be mid-transaction or broken: never reuse it
                conn = None
            raise
        finally:
            if conn is not None:
                if conn.closed or conn.info.transaction_status != 0:  # 0 = IDLE
                    conn.close()
                else:
                    self._idle.put(conn)
            self._slots.release()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


def _vector_dumper(oid: int):
    """psycopg dumper sending a float32 numpy row as pgvector's binary ``vector`` (no text formatting)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class VectorDumper(Dumper):
        format = Format.BINARY

        def dump(self, obj: np.ndarray) -> bytes:
            vec = np.asarray(obj, dtype=">f4")
            return struct.pack(">hh", vec.shape[0], 0) + vec.tobytes()

    VectorDumper.oid = oid
    return VectorDumper


def _quote(*parts: str) -> str:
    return ".".join('"' + p.replace('"', '""') + '"' for p in parts)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# The backend
# --------------------------------------------------------------------------------------------

class PgvectorBackend:
    """VectorBackend on PostgreSQL with the pgvector extension (see the module docstring)."""

    type: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(in_place_update=False, reusable_training=False, exact=False)

    def __init__(self, dsn: str | None = None, schema: str | None = None, pool_size: int | None = None) -> None:
        self._dsn_arg = dsn
        self.schema = schema or os.environ.get(SCHEMA_ENV) or DEFAULT_SCHEMA
        if len(self.schema.encode()) > MAX_IDENT:
            raise BackendError(NAME, f"schema name {self.schema[:20]!r}... is longer than {MAX_IDENT} bytes",
                               setting=SCHEMA_ENV)
        self._pool_size = pool_size or _pool_size_from_env()
        self._info: _Conninfo | None = None
        self._pool: _Pool | None = None
        self._ready = False
        self._ext_schema = "public"
        self._lock = threading.Lock()

    # ----- connections and errors -----

    @property
    def info(self) -> _Conninfo:
        if self._info is None:
            self._info = _Conninfo(self._dsn_arg)
        return self._info

    def _connect(self) -> psycopg.Connection:
        psycopg = _psycopg()
        info = self.info
        try:
            conn = psycopg.connect(info.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise self._connect_error(exc) from None
        try:
            ext = conn.execute("SELECT n.nspname, t.oid FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                               "JOIN pg_type t ON t.typname = 'vector' AND t.typnamespace = n.oid "
                               "WHERE e.extname = 'vector'").fetchone()
            if ext is None:
                ext = self._create_extension(conn)
            self._ext_schema = ext[0]
            conn.adapters.register_dumper(np.ndarray, _vector_dumper(ext[1]))
            conn.execute(f"SET search_path TO {_quote(self.schema)}, {_quote(ext[0])}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_extension(self, conn) -> tuple[str, int]:
        """CREATE EXTENSION when allowed (a superuser, a dev server); else the one-line fix for an admin."""
        psycopg = _psycopg()
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            state = getattr(exc, "sqlstate", None)
            reason = ("it is not available on the server (install pgvector)" if state == "0A000" or
                      "is not available" in str(exc) else "this user may not create it")
            raise BackendError(NAME, f"the pgvector extension is missing in {self.info.where()} and {reason}: "
                               "a superuser must run CREATE EXTENSION vector in that database",
                               setting="extension vector") from None
        return conn.execute("SELECT n.nspname, t.oid FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace "
                            "JOIN pg_type t ON t.typname = 'vector' AND t.typnamespace = n.oid "
                            "WHERE e.extname = 'vector'").fetchone()

    def _connect_error(self, exc: Exception) -> BackendError:
        info = self.info
        state = getattr(exc, "sqlstate", None)
        text = info.scrub(str(exc))
        if state in ("28P01", "28000") or "authentication failed" in text or "no password supplied" in text:
            return BackendError(NAME, f"authentication failed for {info.where()}: check the user and password",
                                setting=info.setting)
        if state == "3D000" or "does not exist" in text and "database" in text:
            return BackendError(NAME, f"database {info.dbname!r} does not exist at {info.host}:{info.port}",
                                setting=info.setting)
        reason = text.split(": ")[-1] if ": " in text else text
        return BackendError(NAME, f"cannot reach PostgreSQL for {info.where()}: {reason[:160]}",
                            setting=info.setting)

    def _pool_(self) -> _Pool:
        with self._lock:
            if self._pool is None:
                self._pool = _Pool(self._connect, self._pool_size)
            return self._pool

    @contextmanager
    def _conn(self, what: str) -> Iterator[psycopg.Connection]:
        """A pooled connection with the catalogue in place; database errors become one-line BackendErrors."""
        psycopg = _psycopg()
        pool = self._pool_()
        try:
            with pool.connection() as conn:
                if not self._ready:
                    self._bootstrap(conn)
                yield conn
        except psycopg.OperationalError as exc:
            if getattr(exc, "sqlstate", None) is None:
                raise self._connect_error(exc) from None
            raise BackendError(NAME, f"{what} failed: {self.info.scrub(exc)}", setting=self.info.setting) from None
        except psycopg.Error as exc:
            raise BackendError(NAME, f"{what} failed: {self.info.scrub(exc)}", setting=self.info.setting) from None

    def _bootstrap(self, conn) -> None:
        """Schema and catalogue, created once under an advisory lock (CREATE IF NOT EXISTS races otherwise)."""
        s = _quote(self.schema)
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('embedding-index-controller bootstrap'))")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {s}.versions (
                index text NOT NULL, version text NOT NULL, table_name text NOT NULL UNIQUE,
                state text NOT NULL CHECK (state IN ('building', 'ready')),
                dim int NOT NULL, metric text NOT NULL, fingerprint text NOT NULL,
                params jsonb NOT NULL, rows bigint, created timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (index, version))""")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {s}.aliases (
                index text PRIMARY KEY, version text NOT NULL, view_name text NOT NULL)""")
        self._ready = True

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    # ----- protocol -----

    def validate(self, settings: BackendSettings, dim: int, metric: Metric) -> None:
        params = index_params(settings.params)
        if metric not in OPS:
            raise InvalidInput(f"pgvector supports metrics {', '.join(OPS)}", field="spec.index.metric", value=metric)
        if not 1 <= dim <= MAX_DIM:
            raise InvalidInput(f"pgvector stores 1 to {MAX_DIM} dimensions", field="spec.model.dim", value=dim)
        if params["kind"] != "exact" and dim > MAX_INDEXED_DIM:
            raise InvalidInput(f"pgvector indexes at most {MAX_INDEXED_DIM} dimensions with {params['kind']}; "
                               "use exact search (no hnsw/ivfflat) or a smaller model",
                               field=f"{FIELD}.{params['kind']}", value=dim)

    def health(self) -> None:
        with self._conn("health check") as conn:
            conn.execute("SELECT 1")

    def create_version(self, ref: VersionRef, settings: BackendSettings) -> PgvectorWriter:
        self.validate(settings, ref.dim, ref.metric)
        params = index_params(settings.params)
        table = table_name(ref.index, ref.version)
        s = _quote(self.schema)
        with self._conn(f"creating table for {ref.index}/{ref.version}") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{ref.index}/{ref.version}",))
            row = conn.execute(f"SELECT state, dim FROM {s}.versions WHERE index = %s AND version = %s",
                               (ref.index, ref.version)).fetchone()
            if row is not None and row[1] != ref.dim:
                raise BackendError(NAME, f"table {self.schema}.{table} already holds vector({row[1]}) for "
                                   f"{ref.index}/{ref.version}, the manifest asks for {ref.dim} dimensions: "
                                   "use a new spec.index.version", setting="spec.model.dim")
            if row is not None and row[0] == "ready":
                raise BackendError(NAME, f"version {ref.index}/{ref.version} already exists (finished) as "
                                   f"{self.schema}.{table}: delete it first or use a new spec.index.version",
                                   setting="spec.index.version")
            # a leftover partial table of the same version is rebuilt from scratch
            conn.execute(f"DROP TABLE IF EXISTS {_quote(self.schema, table)}")
            conn.execute(f"DELETE FROM {s}.versions WHERE index = %s AND version = %s", (ref.index, ref.version))
            conn.execute(f"""CREATE TABLE {_quote(self.schema, table)} (
                row int4 NOT NULL, id text, content_hash text, embedding vector({int(ref.dim)}) NOT NULL,
                fingerprint text NOT NULL DEFAULT {_literal(ref.fingerprint)})""")
            conn.execute(f"INSERT INTO {s}.versions (index, version, table_name, state, dim, metric, fingerprint, "
                         "params) VALUES (%s, %s, %s, 'building', %s, %s, %s, %s)",
                         (ref.index, ref.version, table, ref.dim, ref.metric, ref.fingerprint, json.dumps(params)))
        return PgvectorWriter(self, ref, table, params)

    def open_version(self, ref: VersionRef) -> PgvectorVersion:
        row = self._catalogue_row(ref.index, ref.version)
        if row is None:
            raise NotFound(f"backend {NAME}: version {ref.index}/{ref.version} does not exist in schema "
                           f"{self.schema!r} of {self.info.where()}")
        state, table, dim, metric, params = row
        if state != "ready":
            raise NotFound(f"backend {NAME}: version {ref.index}/{ref.version} was never finished "
                           f"(table {self.schema}.{table} is partial): delete it and build again")
        if dim != ref.dim:
            raise BackendError(NAME, f"table {self.schema}.{table} holds vector({dim}), the version expects "
                               f"{ref.dim} dimensions", setting="spec.model.dim")
        version = PgvectorVersion(self, ref, table, metric, params)
        version.check_table()
        return version

    def delete_version(self, ref: VersionRef) -> None:
        s = _quote(self.schema)
        with self._conn(f"deleting {ref.index}/{ref.version}") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"{ref.index}/{ref.version}",))
            aliased = conn.execute(f"SELECT 1 FROM {s}.aliases WHERE index = %s AND version = %s",
                                   (ref.index, ref.version)).fetchone()
            if aliased:
                raise BackendError(NAME, f"version {ref.index}/{ref.version} is what the alias {ref.index!r} "
                                   "serves: point the alias elsewhere before deleting it", setting="alias")
            row = conn.execute(f"SELECT table_name FROM {s}.versions WHERE index = %s AND version = %s",
                               (ref.index, ref.version)).fetchone()
            table = row[0] if row else table_name(ref.index, ref.version)
            conn.execute(f"DROP TABLE IF EXISTS {_quote(self.schema, table)}")
            conn.execute(f"DELETE FROM {s}.versions WHERE index = %s AND version = %s", (ref.index, ref.version))

    def list_versions(self, index: str) -> list[str]:
        with self._conn(f"listing versions of {index}") as conn:
            rows = conn.execute(f"SELECT version FROM {_quote(self.schema)}.versions WHERE index = %s "
                                "ORDER BY created, version", (index,)).fetchall()
        return [r[0] for r in rows]

    def partial_versions(self, index: str) -> list[str]:
        """Versions whose writer never finished (crashed or still filling)."""
        with self._conn(f"listing versions of {index}") as conn:
            rows = conn.execute(f"SELECT version FROM {_quote(self.schema)}.versions WHERE index = %s "
                                "AND state = 'building' ORDER BY version", (index,)).fetchall()
        return [r[0] for r in rows]

    def get_alias(self, index: str) -> str | None:
        with self._conn(f"reading the alias {index}") as conn:
            row = conn.execute(f"SELECT version FROM {_quote(self.schema)}.aliases WHERE index = %s",
                               (index,)).fetchone()
        return row[0] if row else None

    def set_alias(self, index: str, version: str | None) -> None:
        s = _quote(self.schema)
        view = _ident_for(index)
        with self._conn(f"switching the alias {index}") as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"alias {index}",))
            if version is None:
                conn.execute(f"DROP VIEW IF EXISTS {_quote(self.schema, view)}")
                conn.execute(f"DELETE FROM {s}.aliases WHERE index = %s", (index,))
                return
            row = conn.execute(f"SELECT state, table_name FROM {s}.versions WHERE index = %s AND version = %s "
                               "FOR SHARE", (index, version)).fetchone()
            if row is None or row[0] != "ready":
                raise BackendError(NAME, f"cannot point the alias {index!r} at {version!r}: "
                                   f"{'it does not exist' if row is None else 'it was never finished'}",
                                   setting="alias")
            # the cast drops vector(dim)'s typmod, so one view can switch between versions of different dims
            conn.execute(f"CREATE OR REPLACE VIEW {_quote(self.schema, view)} AS SELECT {_literal(version)}::text "
                         f"AS version, row, id, content_hash, embedding::vector AS embedding, fingerprint "
                         f"FROM {_quote(self.schema, row[1])}")
            conn.execute(f"INSERT INTO {s}.aliases (index, version, view_name) VALUES (%s, %s, %s) "
                         "ON CONFLICT (index) DO UPDATE SET version = excluded.version, view_name = excluded.view_name",
                         (index, version, view))

    # ----- helpers -----

    def _catalogue_row(self, index: str, version: str):
        with self._conn(f"reading {index}/{version}") as conn:
            row = conn.execute(f"SELECT state, table_name, dim, metric, params FROM {_quote(self.schema)}.versions "
                               "WHERE index = %s AND version = %s", (index, version)).fetchone()
        return row

    def table_exists(self, table: str) -> bool:
        with self._conn(f"looking up {table}") as conn:
            return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (_quote(self.schema, table),)).fetchone()[0]


class PgvectorWriter:
    """Binary COPY in batches, one transaction per batch; index and ``ready`` in one transaction at the end."""

    def __init__(self, backend: PgvectorBackend, ref: VersionRef, table: str, params: dict[str, Any]) -> None:
        self.backend = backend
        self.ref = ref
        self.table = table
        self.params = params
        self.rows = 0
        self._record = np.dtype([("nfields", ">i2"), ("len_row", ">i4"), ("row", ">i4"), ("len_vec", ">i4"),
                                 ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (ref.dim,))])

    def add(self, vectors: np.ndarray, *, ids: Sequence[str] | None = None,
            content_hashes: Sequence[str] | None = None) -> None:
        vectors = check_chunk(NAME, f"pgvector table {self.table}", self.ref.dim, vectors, self.rows, ids,
                              content_hashes)
        for start in range(0, len(vectors), COPY_BATCH):
            stop = min(start + COPY_BATCH, len(vectors))
            self._copy(vectors[start:stop], None if ids is None else ids[start:stop],
                       None if content_hashes is None else content_hashes[start:stop])

    def _copy(self, vectors: np.ndarray, ids, hashes) -> None:
        n = len(vectors)
        columns = ["row", "embedding"]
        if ids is None and hashes is None:
            rec = np.empty(n, dtype=self._record)
            rec["nfields"], rec["len_row"], rec["len_vec"] = 2, 4, 4 + 4 * self.ref.dim
            rec["row"] = np.arange(self.rows, self.rows + n)
            rec["dim"], rec["unused"], rec["vec"] = self.ref.dim, 0, vectors
            body = rec.tobytes()
        else:
            body = self._records_with_text(vectors, ids, hashes)
            columns += ["id", "content_hash"]
        sql = f"COPY {_quote(self.backend.schema, self.table)} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
        with self.backend._conn(f"loading rows into {self.table}") as conn, conn.transaction():
            with conn.cursor().copy(sql) as copy:
                copy.write(_COPY_SIGNATURE + body + _COPY_TRAILER)
        self.rows += n

    def _records_with_text(self, vectors: np.ndarray, ids, hashes) -> bytes:
        head = struct.pack(">hi", 4, 4)
        vec_head = struct.pack(">ihh", 4 + 4 * self.ref.dim, self.ref.dim, 0)
        raw = np.asarray(vectors, dtype=">f4")
        parts = []
        for i in range(len(raw)):
            parts += [head, struct.pack(">i", self.rows + i), vec_head, raw[i].tobytes(),
                      _text_field(None if ids is None else ids[i]),
                      _text_field(None if hashes is None else hashes[i])]
        return b"".join(parts)

    def finish(self) -> None:
        b = self.backend
        table = _quote(b.schema, self.table)
        p = self.params
        with b._conn(f"building the index of {self.table}") as conn, conn.transaction():
            if "maintenanceWorkMem" in p:
                conn.execute(f"SET LOCAL maintenance_work_mem = {_literal(p['maintenanceWorkMem'])}")
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (row)")
            if p["kind"] == "hnsw":
                opts = {"m": p.get("m"), "ef_construction": p.get("efConstruction")}
                conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding {OPS[self.ref.metric]}){_with(opts)}")
            elif p["kind"] == "ivfflat":
                conn.execute(f"CREATE INDEX ON {table} USING ivfflat (embedding {OPS[self.ref.metric]})"
                             f"{_with({'lists': p.get('lists')})}")
            conn.execute(f"ANALYZE {table}")
            done = conn.execute(f"UPDATE {_quote(b.schema)}.versions SET state = 'ready', rows = %s "
                                "WHERE index = %s AND version = %s AND state = 'building'",
                                (self.rows, self.ref.index, self.ref.version))
            if done.rowcount != 1:
                raise BackendError(NAME, f"version {self.ref.index}/{self.ref.version} vanished from the catalogue "
                                   "while it was being built (deleted by another process?)", setting="versions")

    def abort(self) -> None:
        self.backend.delete_version(self.ref)


def _text_field(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">i", -1)
    data = str(value).encode()
    return struct.pack(">i", len(data)) + data


def _with(opts: Mapping[str, Any]) -> str:
    given = {k: int(v) for k, v in opts.items() if v is not None}
    return f" WITH ({', '.join(f'{k} = {v}' for k, v in given.items())})" if given else ""


class PgvectorVersion:
    """A finished table: searched with its own index parameters, or exactly with index scans off."""

    def __init__(self, backend: PgvectorBackend, ref: VersionRef, table: str, metric: str,
                 params: Mapping[str, Any]) -> None:
        self.backend = backend
        self.ref = ref
        self.table = table
        self.metric = metric
        self.params = dict(params)
        self._qualified = _quote(backend.schema, table)

    def check_table(self) -> None:
        if not self.backend.table_exists(self.table):
            raise NotFound(f"backend {NAME}: table {self.backend.schema}.{self.table} of version "
                           f"{self.ref.index}/{self.ref.version} is gone (dropped outside the controller?)")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        settings = []
        if self.params.get("kind") == "hnsw":
            ef = min(max(int(self.params.get("efSearch") or 40), k), MAX_EF_SEARCH)
            settings.append(("hnsw.ef_search", str(ef)))
        elif self.params.get("kind") == "ivfflat" and self.params.get("probes"):
            settings.append(("ivfflat.probes", str(self.params["probes"])))
        return self._run(queries, k, settings)

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # OFFSET 0 fences the subquery so no index can serve the ORDER BY: a full scan and an exact top-k,
        # whatever plan a prepared statement cached (GUCs like enable_indexscan do not reach cached plans).
        op = DISTANCE_OP[self.metric]
        sql = (f"SELECT row, d FROM (SELECT row, embedding {op} %s AS d FROM {self._qualified} OFFSET 0) AS s "
               f"ORDER BY d LIMIT {int(k)}")
        return self._run(queries, k, [], sql)

    def _run(self, queries: np.ndarray, k: int, settings: list[tuple[str, str]],
             sql: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.ref.dim:
            raise BackendError(NAME, f"query vectors of shape {queries.shape} do not fit {self.table} "
                               f"(vector({self.ref.dim}))", setting="spec.model.dim")
        nq = len(queries)
        scores = np.full((nq, k), -np.inf, dtype=np.float32)
        rows = np.full((nq, k), -1, dtype=np.int64)
        if nq == 0 or k <= 0:
            return scores, rows
        if sql is None:
            sql = (f"SELECT row, embedding {DISTANCE_OP[self.metric]} %s AS d FROM {self._qualified} "
                   f"ORDER BY d LIMIT {int(k)}")
        try:
            with self.backend._conn(f"searching {self.table}") as conn, conn.transaction():
                for name, value in settings:
                    conn.execute("SELECT set_config(%s, %s, true)", (name, value))
                cur = conn.cursor()
                cur.executemany(sql, [(q,) for q in queries], returning=True)
                for i in range(nq):
                    got = cur.fetchall()
                    if got:
                        r = np.asarray(got, dtype=np.float64)
                        rows[i, :len(got)] = r[:, 0].astype(np.int64)
                        scores[i, :len(got)] = _score(r[:, 1], self.metric)
                    cur.nextset()
        except BackendError as exc:
            if "does not exist" in str(exc) and not self.backend.table_exists(self.table):
                raise NotFound(f"backend {NAME}: table {self.backend.schema}.{self.table} of version "
                               f"{self.ref.index}/{self.ref.version} is gone (dropped outside the controller?)") from None
            raise
        return scores, rows

    def count(self) -> int:
        with self.backend._conn(f"counting {self.table}") as conn:
            return int(conn.execute(f"SELECT count(*) FROM {self._qualified}").fetchone()[0])

    def vectors(self) -> np.ndarray:
        dim = self.ref.dim
        record = np.dtype([("nfields", ">i2"), ("len", ">i4"), ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (dim,))])
        with self.backend._conn(f"reading vectors of {self.table}") as conn:
            with conn.cursor().copy(f"COPY (SELECT embedding FROM {self._qualified} ORDER BY row) "
                                    "TO STDOUT (FORMAT BINARY)") as copy:
                data = b"".join(bytes(chunk) for chunk in copy)
        body = data[len(_COPY_SIGNATURE):len(data) - len(_COPY_TRAILER)]
        rec = np.frombuffer(body, dtype=record)
        return rec["vec"].astype(np.float32)

    def close(self) -> None:
        """Connections belong to the backend's pool: nothing to release per version."""


def _score(distance: np.ndarray, metric: str) -> np.ndarray:
    """pgvector distances -> 'higher is better': 1 - cosine distance, -(negative ip), -(l2 distance)^2."""
    if metric == "cosine":
        return 1.0 - distance
    if metric == "ip":
        return -distance
    return -(distance * distance)
