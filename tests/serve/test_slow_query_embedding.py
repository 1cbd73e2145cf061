"""A slow query embedding holds up neither other requests nor the health probes.

The search handler ran on the event loop, so a query whose text took a second to embed (a remote
embedding server, a CPU model, a megabyte of text) stalled every request of the process, /healthz
and /readyz included: the chart's probes time out after 1 s.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.helpers import manifest, workspace
from tests.serve.test_mirror import EmbedderProcess, candidate, reconcile

pytestmark = pytest.mark.slow


@pytest.fixture
def slow_embedder():
    process = EmbedderProcess()
    process.start()
    yield process
    process.stop()


def test_text_queries_are_embedded_off_the_event_loop(tmp_path, slow_embedder, serve):
    ws = workspace(tmp_path, n_docs=60)
    store = tmp_path / "store"
    reconcile(ws, manifest("v1"), store, "v1.yaml")
    reconcile(ws, candidate(slow_embedder, [{"setWeight": 100}]), store, "v2.yaml")  # stable: the http model
    server = serve(store)
    assert server.search("qs", query="warm up", k=3).json()["version"] == "v2"
    slow_embedder.start("--sleep", "1.0")  # each query text now takes a second to embed
    took: dict[str, float] = {}

    answers: dict[str, int] = {}

    def timed_search(name: str) -> None:
        started = time.perf_counter()
        answers[name] = server.search("qs", query=f"protein folding {name}", k=3).status_code
        took[name] = time.perf_counter() - started

    searches = [threading.Thread(target=timed_search, args=(n,)) for n in ("a", "b")]
    started = time.perf_counter()
    for thread in searches:
        thread.start()
    time.sleep(0.2)
    probe = time.perf_counter()
    assert server.client.get("/healthz").status_code == 200
    assert server.client.get("/readyz").status_code == 200
    probed = time.perf_counter() - probe
    for thread in searches:
        thread.join()
    both = time.perf_counter() - started
    assert answers == {"a": 200, "b": 200}, server.stderr()
    # on the event loop: the probes waited for the embedding (>= 0.8 s), the two searches ran one after
    # the other (>= 2 s)
    assert probed < 0.5, probed
    assert min(took.values()) >= 0.9 and both < 1.9, (took, both)


def test_a_failing_query_embedder_is_the_versions_error(tmp_path, slow_embedder, serve):
    """Only refusals carried their version before: a candidate whose query embedder failed (500) was
    logged under "-", so the candidate's errorRate gate never saw its own failures."""
    ws = workspace(tmp_path, n_docs=60)
    store = tmp_path / "store"
    reconcile(ws, manifest("v1"), store, "v1.yaml")
    reconcile(ws, candidate(slow_embedder, [{"setWeight": 50}, {"pause": {}}]), store, "v2.yaml")
    server = serve(store, "--flush-window", "0.2")
    slow_embedder.start("--fault", "500")
    codes = {server.search("qs", query="protein folding", k=3, key=f"user-{i}").status_code for i in range(40)}
    assert codes == {200, 500}
    metrics = server.client.get("/metrics").text
    assert 'controller_serve_errors_total{code="500",index="qs",role="candidate",version="v2"}' in metrics
    assert 'version="-"' not in metrics
