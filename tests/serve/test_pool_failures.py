"""The pool when a routed version cannot be loaded: the routing record is still followed (never the
last good snapshot), failed loads are retried with backoff, and a load under way keeps the pod ready."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest

from controller.core.routing import bucket
from controller.core.types import Routing
from controller.engine import serving
from controller.engine.serving import VersionPool, search, search_version
from controller.errors import NotReady
from controller.store.fs import Store
from tests.serve.conftest import controller

KEYS = [f"user-{i}" for i in range(200)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def index_file(root: Path, version: str) -> Path:
    return root / "indexes" / "quickstart" / "versions" / version / "index.faiss"


def corrupt(root: Path, version: str) -> bytes:
    """Overwrite the version's FAISS file with garbage; the original bytes, to repair it with."""
    path = index_file(root, version)
    original = path.read_bytes()
    path.write_bytes(b"not a faiss index" * 64)
    return original


def route(store: Store, **routing) -> None:
    store.write_routing("quickstart", "quickstart", Routing(**routing))


def counting_loads(monkeypatch) -> list[str]:
    """Every version the pool tries to load, in order."""
    tries: list[str] = []
    real = serving.load_version

    def load(store, name, version):
        tries.append(version)
        return real(store, name, version)

    monkeypatch.setattr(serving, "load_version", load)
    return tries


def test_a_rollback_to_a_version_that_cannot_load_never_serves_the_withdrawn_version(fresh_store):
    """The auditor's case: v2 promoted, v1 unloaded after the grace period, v1's file corrupted, rollback
    to v1. The last good snapshot (v2) answered every search; the record routes v1 only, so 503."""
    _, root = fresh_store
    store = Store(root)
    clock = Clock()
    pool = VersionPool(store, ["quickstart"], grace_s=10, clock=clock)
    pool.refresh()
    route(store, stable="v2")
    assert pool.refresh() is True
    clock.now = 11
    pool.refresh()
    assert pool.loaded_versions() == [("quickstart", "v2")]
    corrupt(root, "v1")
    route(store, stable="v1")  # the rollback
    pool.refresh()
    routed = pool.routed("quickstart")
    assert routed.routing.stable == "v1" and routed.routing.candidate is None  # what /v1/indexes shows
    assert "v2" not in routed.versions
    for key in KEYS[:50]:
        with pytest.raises(NotReady, match=r"quickstart/v1 is routed but could not be loaded \(\w+Error: ") as exc:
            search(routed, text="vitamin", key=key, k=3)
        assert "v2" not in str(exc.value)
    with pytest.raises(NotReady, match="quickstart/v1"):
        search(routed, text="vitamin", k=3)  # no key: a random draw, same answer
    ready, why = pool.ready()
    assert ready is False and why["quickstart"].startswith("v1 failed to load (")
    assert "its queries get 503" in pool.problems()["quickstart"][0]


def test_a_rollback_through_the_cli_answers_503_over_http_and_serves_v1_once_repaired(fresh_store, serve):
    """The same case end to end, through `controller rollback` and a real server: no search is answered by
    the withdrawn v2, /readyz says why, the failure is logged once, and v1 is served after the repair."""
    _, root = fresh_store
    server = serve(root, "--grace", "0", "--log-level", "info")
    Store(root).write_routing("quickstart", "quickstart", Routing(stable="v2"))  # the promotion
    deadline = time.monotonic() + 10
    while "quickstart/v1" in server.client.get("/readyz").json()["loaded"]:  # unloaded at once (grace 0)
        assert time.monotonic() < deadline, server.stderr()
        time.sleep(0.05)
    original = corrupt(root, "v1")
    assert controller("rollback", "quickstart", "--to", "v1", "--store", str(root)) == 0
    deadline = time.monotonic() + 10
    while server.client.get("/v1/indexes").json()["indexes"]["quickstart"]["stable"] != "v1":
        assert time.monotonic() < deadline, "the service never followed the rollback"
        time.sleep(0.05)
    for i in range(30):
        response = server.search(query="vitamin", key=f"user-{i}", k=3)
        assert response.status_code == 503, response.json()
        assert response.headers["Retry-After"] and "quickstart/v1" in response.json()["error"]
    readyz = server.client.get("/readyz")
    assert readyz.status_code == 503 and "v1 failed to load" in readyz.json()["waiting"]["quickstart"]
    assert any("v1 failed to load" in note for note in readyz.json()["problems"]["quickstart"])
    time.sleep(0.5)  # a few polls: the failure must not be logged on each
    index_file(root, "v1").write_bytes(original)
    deadline = time.monotonic() + 20  # retried 1 s, then 2 s, 4 s ... after each failure
    while (response := server.search(query="vitamin", k=3)).status_code != 200:
        assert time.monotonic() < deadline, server.stderr()
        time.sleep(0.1)
    assert response.json()["version"] == "v1" and server.client.get("/readyz").status_code == 200
    log = server.stop()
    assert log.count("cannot load quickstart/v1") == 1, log
    assert "loaded quickstart/v1" in log and "after failing" in log  # the info line of the recovery


def test_a_candidate_that_fails_to_load_has_its_share_answered_by_the_stable(fresh_store):
    _, root = fresh_store
    corrupt(root, "v2")  # routed as the candidate at 25%
    pool = VersionPool(Store(root), ["quickstart"], clock=Clock())
    assert pool.refresh() is True
    routed = pool.routed("quickstart")
    assert (routed.routing.stable, routed.routing.candidate, routed.routing.weight) == ("v1", "v2", 25)
    assert set(routed.versions) == {"v1"}
    candidate_keys = [key for key in KEYS if bucket(key) < 25]
    assert candidate_keys  # keys the routing sends to v2
    for key in KEYS:
        out = search(routed, text="vitamin", key=key, k=3)
        assert (out.version, out.role) == ("v1", "stable") and len(out.hits) == 3
    with pytest.raises(NotReady, match="quickstart/v2 is routed but could not be loaded"):
        search_version(routed, "v2", text="vitamin", k=3)  # mirroring and interleaving skip it
    assert pool.ready() == (True, {})  # the stable serves
    [note] = pool.problems()["quickstart"]
    assert note.startswith("candidate v2 failed to load") and "the stable v1 answers its 25% share" in note


def test_a_failed_load_is_retried_with_backoff_and_served_once_repaired(fresh_store, monkeypatch, caplog):
    _, root = fresh_store
    store = Store(root)
    route(store, stable="v1")
    original = corrupt(root, "v1")
    tries = counting_loads(monkeypatch)
    clock = Clock()
    pool = VersionPool(store, ["quickstart"], clock=clock)
    pool.refresh()
    assert tries == ["v1"] and pool.ready()[0] is False
    # the record does not change: each retry comes from the backoff alone (1 s, doubling, at most 60 s)
    for delay in (1, 2, 4, 8, 16, 32, 60, 60):
        before = len(tries)
        clock.now += delay - 0.5  # halves: exact in binary, so the sums hit each retry time exactly
        assert pool.refresh() is False
        assert len(tries) == before, f"retried before {delay} s had passed"
        clock.now += 0.5
        pool.refresh()
        assert len(tries) == before + 1, f"not retried after {delay} s"
    assert "tried 9 time(s), next try in 60 s" in pool.ready()[1]["quickstart"]
    index_file(root, "v1").write_bytes(original)
    pool.refresh()
    assert "v1" not in pool.routed("quickstart").versions  # repaired, but its next try is not due yet
    clock.now += 60
    with caplog.at_level(logging.INFO, logger="controller.serve"):
        assert pool.refresh() is True
    out = search(pool.routed("quickstart"), text="vitamin", key="k", k=3)
    assert out.version == "v1" and len(out.hits) == 3
    assert pool.ready() == (True, {}) and pool.problems() == {}
    assert any("loaded quickstart/v1" in r.getMessage() and "after failing 9 time(s)" in r.getMessage()
               for r in caplog.records)


def _held_loads(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Every load_version waits until `release` is set; `started` tells that one began."""
    started, release = threading.Event(), threading.Event()
    real = serving.load_version

    def held(store_, name, version):
        started.set()
        assert release.wait(30)
        return real(store_, name, version)

    monkeypatch.setattr(serving, "load_version", held)
    return started, release


def test_a_long_load_of_a_newly_routed_version_keeps_the_pod_ready(fresh_store, monkeypatch):
    """Every replica loads the same new version at once: readiness must not depend on how long it takes."""
    _, root = fresh_store
    store = Store(root)
    route(store, stable="v1")
    pool = VersionPool(store, ["quickstart"])
    pool.refresh()
    started, release = _held_loads(monkeypatch)
    route(store, stable="v1", candidate="v2", weight=50)
    refresher = threading.Thread(target=pool.refresh)
    refresher.start()
    try:
        assert started.wait(10)
        assert pool.ready() == (True, {})  # the old snapshot serves meanwhile
        assert any("v2 is loading" in note for note in pool.problems()["quickstart"])
        out = search(pool.routed("quickstart"), text="vitamin", key=KEYS[0], k=3)
        assert out.version == "v1" and pool.routed("quickstart").routing.candidate is None
    finally:
        release.set()
        refresher.join(30)
    assert set(pool.routed("quickstart").versions) == {"v1", "v2"} and pool.problems() == {}


def test_a_first_load_still_makes_the_pod_wait(fresh_store, monkeypatch):
    """Before any snapshot there is nothing to serve: not ready, and /readyz says what is loading."""
    _, root = fresh_store
    started, release = _held_loads(monkeypatch)
    pool = VersionPool(Store(root), ["quickstart"])
    refresher = threading.Thread(target=pool.refresh)
    refresher.start()
    try:
        assert started.wait(10)
        assert pool.ready() == (False, {"quickstart": "loading v1"})
    finally:
        release.set()
        refresher.join(30)
    assert pool.ready() == (True, {})


def test_a_repeated_identical_failure_is_logged_once(fresh_store, caplog):
    _, root = fresh_store
    original = corrupt(root, "v2")
    clock = Clock()
    pool = VersionPool(Store(root), ["quickstart"], clock=clock)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    with caplog.at_level(logging.INFO, logger="controller.serve"):
        for _ in range(20):  # polls and retries, failing the same way each time
            pool.refresh()
            clock.now += 30
        assert len(warnings()) == 1 and warnings()[0].startswith("cannot load quickstart/v2: ")
        index_file(root, "v2").unlink()  # a new way to fail: said once more
        for _ in range(5):
            clock.now += 60
            pool.refresh()
        assert len(warnings()) == 2 and warnings()[1] != warnings()[0]
        index_file(root, "v2").write_bytes(original)
        clock.now += 60
        pool.refresh()
    assert set(pool.routed("quickstart").versions) == {"v1", "v2"}
    assert any(r.getMessage().startswith("loaded quickstart/v2") for r in caplog.records)


def test_an_unreadable_routing_record_keeps_the_snapshot_and_is_logged_once(fresh_store, caplog):
    _, root = fresh_store
    pool = VersionPool(Store(root), ["quickstart"])
    pool.refresh()
    before = pool.routed("quickstart")
    (root / "indexes" / "quickstart" / "routing.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="controller.serve"):
        for _ in range(5):
            assert pool.refresh() is False
    assert len(caplog.records) == 1 and "routing record of quickstart" in caplog.records[0].getMessage()
    assert pool.routed("quickstart") is before and pool.ready() == (True, {})
    assert pool.problems()["quickstart"][0].startswith("routing record not followed: ")
