"""The service's query vectors reach the drift reservoir of their model whatever happens to the version."""

from __future__ import annotations

import shutil

import numpy as np

from controller.engine.serving import VersionPool, search
from controller.serve.app import ServeState
from controller.serve.metrics import ServeMetrics
from controller.store import queries as Q
from controller.store.fs import Store


def _served(store: Store) -> tuple[ServeState, object]:
    pool = VersionPool(store, ["quickstart"])
    pool.refresh()
    out = search(pool.routed("quickstart"), text="vitamin d", k=3, key="bob")  # bob routes to stable v1
    assert out.version == "v1"
    return ServeState(pool, None, ServeMetrics(), record=True), out


def test_recording_outlives_the_version_that_answered(fresh_store):
    """Keyed by version before, the window was recorded by reading the version's meta: once the version
    was collected (history.keep), that raised, and recording stopped for the rest of the process."""
    _, root = fresh_store
    store = Store(root)
    state, out = _served(store)
    before = Q.read_reservoir(store.index_dir("quickstart"), out.model)  # other tests' servers may have added
    seen = before.seen if before is not None else 0
    state.keep_vector("quickstart", out.model_key, out.model, out.vector)
    shutil.rmtree(store.index_dir("quickstart") / "versions" / "v1")
    state.record_vectors()
    assert state.record
    reservoir = Q.read_reservoir(store.index_dir("quickstart"), out.model)
    assert reservoir is not None and reservoir.seen == seen + 1
    assert any(np.array_equal(row, out.vector[0]) for row in reservoir.vectors)
    for _ in range(3):
        state.keep_vector("quickstart", out.model_key, out.model, out.vector)
    state.record_vectors()
    assert Q.read_reservoir(store.index_dir("quickstart"), out.model).seen == seen + 4


def test_recording_never_brings_a_deleted_index_back(fresh_store):
    _, root = fresh_store
    store = Store(root)
    state, out = _served(store)
    state.keep_vector("quickstart", out.model_key, out.model, out.vector)
    shutil.rmtree(store.index_dir("quickstart"))
    state.record_vectors()
    assert not store.index_dir("quickstart").exists() and "quickstart" not in store.indexes()
    assert state.record


def test_text_the_model_cannot_embed_gets_no_hits_and_no_drift_row(fresh_store):
    """The hashing model embeds "!!!" as a zero row: a cosine search listed arbitrary documents at score 0,
    and the zero rows in the reservoir set off query drift alarms."""
    _, root = fresh_store
    store = Store(root)
    state, _ = _served(store)
    routed = state.pool.routed("quickstart")
    for text in ("!!!", "-", "\U0001F600"):
        out = search(routed, text=text, k=3, key="bob")
        assert (out.ids, out.scores) == ([], []) and not out.vector.any(), text
        state.keep_vector("quickstart", out.model_key, out.model, out.vector)
    assert not state.vectors
    assert search(routed, text="vitamin d !!!", k=3, key="bob").ids  # text with words is answered as before
