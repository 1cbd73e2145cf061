"""The VectorBackend contract (controller/backends/base.py), run against every importable backend.

Adding a backend here is two lines: a ``<type>_harness`` fixture that builds its Harness (skip
when its client or server is not available) and its type in BACKENDS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from controller.backends import get_backend, has_native_alias
from controller.backends.base import BackendSettings, OpenVersion, VectorBackend, VersionRef, VersionWriter
from controller.errors import NotFound

BACKENDS = ["faiss", "pgvector", "qdrant"]
METRICS = ["cosine", "ip", "l2"]
DIM = 16


@dataclass
class Harness:
    backend: VectorBackend
    #: settings of an exact (brute-force) index for a metric
    exact: Callable[[str], BackendSettings]
    #: where version ``v`` of index ``name`` lives (the store's directory for file backends)
    location: Callable[[str, str], Path | None]
    native_alias: bool  # set_alias/get_alias move a real alias (False: the store's routing is the alias)
    lists_versions: bool  # list_versions reports partial builds (False: the store's staging recovery does)

    def ref(self, version: str, metric: str, name: str = "conf") -> VersionRef:
        return VersionRef(index=name, version=version, dim=DIM, metric=metric, fingerprint="fp-test",
                          location=self.location(name, version))


@pytest.fixture
def faiss_harness(tmp_path: Path) -> Harness:
    def location(name: str, version: str) -> Path:
        path = tmp_path / name / version
        path.mkdir(parents=True, exist_ok=True)
        return path

    return Harness(get_backend("faiss"), lambda metric: BackendSettings("faiss", {"factory": "Flat"}),
                   location, native_alias=False, lists_versions=False)


@pytest.fixture
def pgvector_harness(pg_backend) -> Harness:
    """A real PostgreSQL + pgvector (tests/backends/conftest.py), one schema per test."""
    return Harness(pg_backend, lambda metric: BackendSettings("pgvector", {}), lambda name, version: None,
                   native_alias=True, lists_versions=True)


@pytest.fixture
def qdrant_harness(qdrant_backend) -> Harness:
    """qdrant-client's local mode in memory (tests/backends/conftest.py)."""
    return Harness(qdrant_backend, lambda metric: BackendSettings("qdrant", {}), lambda name, version: None,
                   native_alias=True, lists_versions=True)


@pytest.fixture(params=BACKENDS)
def harness(request: pytest.FixtureRequest) -> Harness:
    return request.getfixturevalue(f"{request.param}_harness")


def vectors(n: int, seed: int = 0) -> np.ndarray:
    """Rows with different norms (0.5 to 3): drift needs them back raw, and cosine must ignore them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return (x * rng.uniform(0.5, 3.0, size=(n, 1))).astype(np.float32)


def build(h: Harness, version: str, metric: str, x: np.ndarray, chunk: int = 7) -> OpenVersion:
    writer = h.backend.create_version(h.ref(version, metric), h.exact(metric))
    assert isinstance(writer, VersionWriter)
    for start in range(0, len(x), chunk):
        writer.add(x[start:start + chunk])
    writer.finish()
    return h.backend.open_version(h.ref(version, metric))


def expected(x: np.ndarray, q: np.ndarray, metric: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    xd, qd = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        scores = (qd / np.linalg.norm(qd, axis=1, keepdims=True)) @ (xd / np.linalg.norm(xd, axis=1, keepdims=True)).T
    elif metric == "ip":
        scores = qd @ xd.T
    else:
        scores = -((qd[:, None, :] - xd[None, :, :]) ** 2).sum(-1)
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.mark.parametrize("metric", METRICS)
def test_rows_scores_and_order_follow_the_metric(harness: Harness, metric: str) -> None:
    x, q = vectors(60), vectors(5, seed=1)
    opened = build(harness, "v1", metric, x)
    assert isinstance(opened, OpenVersion) and opened.count() == 60
    scores, rows = opened.search(q, 10)
    want_scores, want_rows = expected(x, q, metric, 10)
    assert scores.shape == rows.shape == (5, 10)
    np.testing.assert_array_equal(rows, want_rows)  # row numbers = order of add, across chunks
    np.testing.assert_allclose(scores, want_scores, rtol=1e-4, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all(), "higher is better: scores must not increase"
    exact_scores, exact_rows = opened.exact_search(q, 10)
    np.testing.assert_array_equal(exact_rows, want_rows)
    opened.close()


@pytest.mark.parametrize("metric", METRICS)
def test_fewer_rows_than_k_pad_with_minus_one_and_minus_inf(harness: Harness, metric: str) -> None:
    opened = build(harness, "v1", metric, vectors(3))
    scores, rows = opened.search(vectors(2, seed=3), 5)
    assert rows.shape == scores.shape == (2, 5)
    assert (rows[:, :3] >= 0).all() and (rows[:, 3:] == -1).all()
    assert np.isneginf(scores[:, 3:]).all() and np.isfinite(scores[:, :3]).all()
    opened.close()


@pytest.mark.parametrize("metric", METRICS)
def test_vectors_come_back_raw_with_their_norms(harness: Harness, metric: str) -> None:
    x = vectors(40, seed=4)
    opened = build(harness, "v1", metric, x)
    back = np.asarray(opened.vectors())
    assert back.shape == x.shape and back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(back, axis=1), np.linalg.norm(x, axis=1), rtol=1e-6)
    opened.close()


def test_a_version_is_invisible_until_finish(harness: Harness) -> None:
    writer = harness.backend.create_version(harness.ref("v1", "cosine"), harness.exact("cosine"))
    writer.add(vectors(10))
    with pytest.raises(NotFound):
        harness.backend.open_version(harness.ref("v1", "cosine"))
    writer.finish()
    assert harness.backend.open_version(harness.ref("v1", "cosine")).count() == 10


def test_abort_leaves_no_version(harness: Harness) -> None:
    writer = harness.backend.create_version(harness.ref("v1", "cosine"), harness.exact("cosine"))
    writer.add(vectors(10))
    writer.abort()
    with pytest.raises(NotFound):
        harness.backend.open_version(harness.ref("v1", "cosine"))
    assert "v1" not in harness.backend.list_versions("conf")


def test_delete_is_idempotent(harness: Harness) -> None:
    build(harness, "v1", "cosine", vectors(10)).close()
    harness.backend.delete_version(harness.ref("v1", "cosine"))
    harness.backend.delete_version(harness.ref("v1", "cosine"))  # a second delete is not an error
    with pytest.raises(NotFound):
        harness.backend.open_version(harness.ref("v1", "cosine"))
    harness.backend.delete_version(harness.ref("never-built", "cosine"))


def test_list_versions_reports_finished_and_partial_builds(harness: Harness) -> None:
    if not harness.lists_versions:
        pytest.skip(f"{harness.backend.type}: a partial build is the store's staging directory, which the "
                    "store's recovery removes")
    build(harness, "v1", "cosine", vectors(10)).close()
    partial = harness.backend.create_version(harness.ref("v2", "cosine"), harness.exact("cosine"))
    partial.add(vectors(5))
    assert {"v1", "v2"} <= set(harness.backend.list_versions("conf"))
    harness.backend.delete_version(harness.ref("v2", "cosine"))
    assert "v2" not in harness.backend.list_versions("conf")


def test_native_alias_capability_is_known_without_importing(harness: Harness) -> None:
    # the engine skips a backend without a native alias by the registry's word, never importing it
    assert harness.backend.capabilities.native_alias is harness.native_alias
    assert has_native_alias(harness.backend.type) is harness.native_alias


def test_alias_moves_atomically_or_is_the_stores(harness: Harness) -> None:
    build(harness, "v1", "cosine", vectors(10)).close()
    harness.backend.set_alias("conf", "v1")
    if not harness.native_alias:
        assert harness.backend.get_alias("conf") is None  # the store's routing record is the alias
        return
    assert harness.backend.get_alias("conf") == "v1"
    harness.backend.set_alias("conf", None)
    assert harness.backend.get_alias("conf") is None


def test_health_and_validation_of_the_exact_settings(harness: Harness) -> None:
    harness.backend.health()
    for metric in METRICS:
        harness.backend.validate(harness.exact(metric), DIM, metric)
    assert isinstance(harness.backend, VectorBackend)
