"""The version pool (atomic swaps, grace unload, query embedders) and the event log, in process."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest
import yaml

from controller.core.types import Routing
from controller.engine import events as EV
from controller.engine.serving import MAX_K, RoutedIndex, VersionPool, search
from controller.errors import Conflict, InvalidInput, NotFound, NotReady
from controller.manifest.models import ModelSpec
from controller.store import events as E
from controller.store.fs import Store
from tests.serve.conftest import controller


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pool_publishes_a_new_snapshot_only_after_loading_and_unloads_after_grace(fresh_store):
    _, root = fresh_store
    store = Store(root)
    clock = Clock()
    pool = VersionPool(store, ["quickstart"], grace_s=10, clock=clock)
    assert pool.ready()[0] is False  # nothing loaded before the first refresh
    assert pool.refresh() is True and pool.ready()[0] is True
    before = pool.routed("quickstart")
    assert set(before.versions) == {"v1", "v2"} and before.routing.weight == 25
    assert pool.refresh() is False  # unchanged record: same snapshot, nothing reloaded
    assert pool.routed("quickstart") is before
    # the alias moves to v2 only: the old snapshot object is untouched (in-flight requests keep it)
    store.write_routing("quickstart", "quickstart", Routing(stable="v2"))
    assert pool.refresh() is True
    after = pool.routed("quickstart")
    assert after is not before and set(after.versions) == {"v2"} and set(before.versions) == {"v1", "v2"}
    assert after.versions["v2"] is before.versions["v2"]  # kept, not reloaded
    assert ("quickstart", "v1") in pool.loaded_versions()  # within the grace period
    clock.now = 11
    pool.refresh()
    assert pool.loaded_versions() == [("quickstart", "v2")]
    out = search(before, text="vitamin", key="k", k=3)  # an old snapshot still answers
    assert out.version in {"v1", "v2"} and len(out.hits) == 3


def test_search_validates_k_vector_and_model(fresh_store):
    _, root = fresh_store
    pool = VersionPool(Store(root))
    pool.refresh()
    routed = pool.routed("quickstart")
    stable_key = next(f"s{i}" for i in range(100) if search(routed, text="a", key=f"s{i}").version == "v1")
    model = routed.versions["v1"].model_key
    for bad, field in (({"k": 0}, "k"), ({"k": MAX_K + 1}, "k"), ({"k": True}, "k")):
        with pytest.raises(InvalidInput) as exc:
            search(routed, text="a", **bad)
        assert exc.value.field == field
    with pytest.raises(InvalidInput, match="NaN"):
        search(routed, vector=[float("nan")] * 384, model=model, key=stable_key)
    with pytest.raises(InvalidInput, match="384 dimensions"):
        search(routed, vector=[0.1] * 3, model=model, key=stable_key)
    # finite, but without a direction: answered arbitrarily, they would also poison the drift reservoir
    for no_direction in ([0.0] * 384, [1e20] * 384):
        with pytest.raises(InvalidInput, match="norm is 0 or overflows") as exc:
            search(routed, vector=no_direction, model=model, key=stable_key)
        assert exc.value.field == "vector"
    with pytest.raises(Conflict) as exc:
        search(routed, vector=[0.1] * 384, model=routed.versions["v2"].model_key, key=stable_key)
    assert model in str(exc.value) and routed.versions["v2"].model_key in str(exc.value)
    hits = search(routed, vector=np.ones(384), model=model, key=stable_key, k=5).hits
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    with pytest.raises(NotFound):
        pool.routed("nope")


def test_routed_search_returns_the_exact_ranking_and_only_real_rows(fresh_store):
    """The pool's fast path (a full result, no padding) gives what brute force gives; k beyond the
    corpus returns every document once, ranked 1..n, no padding row."""
    _, root = fresh_store
    store = Store(root)
    pool = VersionPool(store, ["quickstart"])
    pool.refresh()
    routed = pool.routed("quickstart")
    loaded = routed.versions["v1"]
    key = next(f"s{i}" for i in range(100) if search(routed, text="a", key=f"s{i}").version == "v1")
    stored = np.asarray(loaded.index.vectors(), dtype=np.float64)
    unit = stored / np.linalg.norm(stored, axis=1, keepdims=True)
    query = np.random.default_rng(3).standard_normal(stored.shape[1]).astype(np.float32)
    out = search(routed, vector=query, model=loaded.model_key, key=key, k=7)
    exact = unit @ (query / np.linalg.norm(query))
    order = np.argsort(-exact, kind="stable")[:7]
    assert [h.id for h in out.hits] == [loaded.ids[i] for i in order]
    assert [h.score for h in out.hits] == pytest.approx(exact[order].tolist(), abs=1e-5)
    assert [h.rank for h in out.hits] == list(range(1, 8))
    everything = search(routed, vector=query, model=loaded.model_key, key=key, k=MAX_K).hits
    assert len(everything) == len(loaded.ids) < MAX_K  # padded to k by the backend, dropped here
    assert sorted(h.id for h in everything) == sorted(loaded.ids)
    assert [h.rank for h in everything] == list(range(1, len(loaded.ids) + 1))
    for bad in (np.inf, -np.inf, np.nan):
        vector = query.copy()
        vector[5] = bad
        with pytest.raises(InvalidInput, match="first at position 5"):
            search(routed, vector=vector, model=loaded.model_key, key=key)


def test_request_ids_are_random_hex():
    from controller.engine.serving import request_id

    ids = {request_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_remembered_buckets_are_the_routing_contracts_and_the_weight_still_decides(fresh_store, monkeypatch):
    """The pool remembers bucket(key), never the version: raising the weight moves exactly the keys
    whose bucket falls under the new weight to the candidate, as hashing each time does; the memo
    stays bounded."""
    from controller.core.routing import bucket
    from controller.engine import serving

    _, root = fresh_store
    pool = VersionPool(Store(root), ["quickstart"])
    pool.refresh()
    routed = pool.routed("quickstart")
    monkeypatch.setattr(serving, "MAX_BUCKETS", 50)
    monkeypatch.setattr(serving, "_buckets", {})
    keys = [f"user-{i}" for i in range(120)]
    for weight in (25.0, 60.0, 0.0, 100.0):
        view = RoutedIndex(routed.name, Routing(stable="v1", candidate="v2", weight=weight), routed.versions, ())
        for key in keys:
            out = search(view, text="vitamin", key=key, k=1)
            assert out.bucket == bucket(key)
            assert out.version == ("v2" if bucket(key) < weight else "v1"), (key, weight)
        assert 0 < len(serving._buckets) <= 50 and all(serving._buckets[k][0] == bucket(k) for k in serving._buckets)


def test_a_query_embedder_giving_the_wrong_shape_is_an_error_not_a_search(fresh_store):
    """FAISS gets a pointer to dim floats: a query row of another shape must never reach it."""
    from controller.errors import ControllerError

    class Short:
        def embed_queries(self, ids, texts):
            return np.zeros((1, 3), np.float32)

    _, root = fresh_store
    pool = VersionPool(Store(root), ["quickstart"])
    pool.refresh()
    routed = pool.routed("quickstart")
    routed.versions["v1"].text_embedder = Short()
    with pytest.raises(ControllerError, match=r"shape \(1, 3\), not \(1, 384\)"):
        routed.versions["v1"].answer("vitamin", None, None, 3)


def test_an_index_without_a_version_is_not_ready_to_search(fresh_store):
    _, root = fresh_store
    (root / "indexes" / "empty").mkdir()
    pool = VersionPool(Store(root))
    pool.refresh()
    with pytest.raises(NotReady, match="no version"):
        pool.routed("empty")


def test_precomputed_version_with_a_query_embedder_answers_text(built_store, tmp_path):
    ws, _ = built_store
    store = tmp_path / "store"
    doc = yaml.safe_load((ws / "pre.yaml").read_text())
    doc["spec"]["model"]["queryEmbedder"] = {"provider": "hashing", "name": "hashed-ngrams", "version": "1",
                                             "dim": 16, "options": {"seed": 1}}
    (ws / "pre-qe.yaml").write_text(yaml.safe_dump(doc))
    assert controller("reconcile", str(ws / "pre-qe.yaml"), "--store", str(store)) == 0
    meta = Store(store).meta("pre", "p1")
    assert meta["model"]["queryEmbedder"]["provider"] == "hashing"
    pool = VersionPool(Store(store))
    pool.refresh()
    out = search(pool.routed("pre"), text="vitamin", k=2)
    assert out.version == "p1" and len(out.hits) == 2


def test_query_embedder_must_match_the_dimension_and_embed_text():
    base = {"provider": "precomputed", "name": "m", "version": "1", "dim": 16}
    with pytest.raises(ValueError, match="queryEmbedder.dim 8 differs"):
        ModelSpec.model_validate({**base, "queryEmbedder": {"provider": "hashing", "name": "h", "version": "1",
                                                             "dim": 8}})
    with pytest.raises(ValueError, match="must embed text"):
        ModelSpec.model_validate({**base, "queryEmbedder": {**base}})
    spec = ModelSpec.model_validate({**base, "queryEmbedder": {"provider": "hashing", "name": "h", "version": "1",
                                                                "dim": 16}})
    assert spec.fingerprint() == ModelSpec.model_validate(base).fingerprint()  # not part of the space


def test_event_log_flushes_rotates_retires_and_skips_torn_lines(tmp_path):
    log = E.EventLog(tmp_path, retention=E.Retention(segment_bytes=400, retain_bytes=1500))
    for i in range(60):  # flushed by hand every 3 events (the thread does it every window)
        log.append({"type": "impression", "ts": time.time(), "requestId": f"r{i}", "index": "a", "version": "v1",
                    "role": "stable", "ids": ["d1", "d2"], "tookMs": float(i)})
        if i % 3 == 2:
            assert log.flush() == 3
    log.close()
    files = E.segments(tmp_path / "a")
    assert len(files) >= 2  # rotated
    assert sum(p.stat().st_size for p in files) <= 1500 + 600  # old segments retired (the open one may grow)
    assert log.written == 60 and log.write_errors == 0
    kept = [e["requestId"] for e in E.read_events(tmp_path, "a")]
    assert kept == [f"r{i}" for i in range(60 - len(kept), 60)]  # the newest survive, in order
    with open(files[-1], "ab") as handle:
        handle.write(b'{"type": "impression", "requestId": "to')
    assert [e["requestId"] for e in E.read_events(tmp_path, "a")] == kept
    old = files[0]
    os.utime(old, (time.time() - 10 * 86400, time.time() - 10 * 86400))
    assert old in E.retire(tmp_path / "a", E.Retention(retain_age_s=86400))


def test_summary_definitions_on_a_small_log():
    imp = lambda rid, v, ids, ms: {"type": "impression", "requestId": rid, "version": v, "role": "stable",  # noqa: E731
                                   "ids": ids, "tookMs": ms}
    records = [imp("a", "v1", ["x", "y", "z"], 1.0), imp("b", "v1", ["x", "y"], 3.0), imp("c", "v1", [], 2.0),
               {"type": "click", "requestId": "a", "docId": "y", "position": 2},
               {"type": "click", "requestId": "a", "docId": "z"},
               {"type": "dwell", "requestId": "a", "docId": "y", "dwellMs": 1000},
               {"type": "skip", "requestId": "b", "docId": "x"},
               {"type": "complaint", "requestId": "c"},
               {"type": "error", "version": "v1"}, {"type": "error", "version": None}]
    s = EV.summarize(records)
    v1 = s["v1"]
    assert (v1["queries"], v1["clicks"], v1["errors"]) == (3, 2, 1)
    assert v1["ctr"] == round(1 / 3, 6) and v1["clicksPerQuery"] == round(2 / 3, 6)
    assert v1["mrr"] == round(0.5 / 3, 6)  # first click at rank 2 on one query of three
    assert v1["skipRate"] == v1["complaintRate"] == v1["zeroResultRate"] == round(1 / 3, 6)
    assert v1["dwellMeanMs"] == v1["dwellMedianMs"] == 1000.0 and v1["latencyMs"]["p50"] == 2.0
    assert s["-"]["errors"] == 1


def test_a_version_that_cannot_load_is_retried_per_poll_not_in_a_busy_loop(fresh_store):
    """The refresh reads routing.json; a file watch that woke on those reads retried a failing load
    hundreds of times a second (one core busy, a warning per try)."""
    import json
    import time

    _, root = fresh_store
    record = root / "indexes" / "quickstart" / "routing.json"
    routing = json.loads(record.read_text())
    routing["candidate"], routing["weight"] = "v9", 10.0  # a version the store does not have
    record.write_text(json.dumps(routing))
    pool = VersionPool(Store(root), ["quickstart"], poll_s=0.5)
    tries = []
    refresh = pool.refresh
    pool.refresh = lambda: tries.append(time.monotonic()) or refresh()
    pool.start()
    try:
        time.sleep(2.0)
    finally:
        pool.stop()
    assert "no version 'v9'" in " ".join(pool.problems()["quickstart"])
    assert 2 <= len(tries) <= 8, f"{len(tries)} tries in 2 s at a 0.5 s poll"
