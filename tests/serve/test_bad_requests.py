"""Every bad request gets a 4xx that names the field, and the next good request succeeds."""

from __future__ import annotations

import json

import pytest

GOOD = {"query": "vitamin D deficiency", "k": 3, "key": "alice"}


def _cases(model_key: str) -> list[tuple[str, str, dict | bytes, dict, int, str]]:
    """(case, index, body, headers, status, field)"""
    j = {"content-type": "application/json"}
    vec = [0.1] * 384
    return [
        ("missing query", "quickstart", {"k": 3}, j, 422, "query"),
        ("k=0", "quickstart", {"query": "a", "k": 0}, j, 422, "k"),
        ("k=10^9", "quickstart", {"query": "a", "k": 10**9}, j, 422, "k"),
        ("k not a number", "quickstart", {"query": "a", "k": "ten"}, j, 422, "k"),
        ("wrong vector length", "quickstart", {"vector": [0.1] * 5, "model": model_key, "key": "bob"}, j, 422,
         "vector"),
        ("NaN in vector", "quickstart", b'{"vector": [NaN' + b", 0.1" * 383 + b'], "model": "%s"}' % model_key.encode(),
         j, 422, "vector[0]"),
        ("k true", "quickstart", {"query": "a", "k": True}, j, 422, "k"),
        ("k as text", "quickstart", {"query": "a", "k": "10"}, j, 422, "k"),
        ("zero vector", "quickstart", {"vector": [0.0] * 384, "model": model_key, "key": "bob"}, j, 422, "vector"),
        ("vector without model", "quickstart", {"vector": vec, "key": "bob"}, j, 422, "model"),
        ("wrong fingerprint", "quickstart", {"vector": vec, "model": "0123456789ab", "key": "bob"}, j, 409, None),
        ("unknown index", "nope", GOOD, j, 404, None),
        ("10 MB body", "quickstart", b'{"query": "' + b"a" * (10 * 2**20) + b'"}', j, 413, "body"),
        ("non-JSON", "quickstart", b"this is not json", j, 422, "body"),
        ("unknown field", "quickstart", {"query": "a", "kk": 3}, j, 422, "kk"),
        ("text for precomputed without query embedder", "pre", {"query": "vitamin"}, j, 422, "query"),
        ("empty query", "quickstart", {"query": "   "}, j, 422, "query"),
        ("query text over 8192 characters", "quickstart", {"query": "protein " * 1025}, j, 422, "query"),
    ]


def test_bad_requests_each_refused_with_the_field_then_service_keeps_serving(built_store, serve):
    _, store = built_store
    server = serve(store)
    # a key that routes to stable v1 (bucket >= 25), so the vector cases hit a known model
    first = server.search(**{**GOOD, "key": "bob"}).json()
    assert first["version"] == "v1"
    cases = _cases(first["model"]["key"])
    feedback_cases = [
        ("unknown feedback type", {"requestId": first["requestId"], "events": [{"type": "clack", "docId": "x"}]},
         422, "events[0].type"),
        ("unknown request id", {"requestId": "not-a-request", "events": [{"type": "click", "docId": "x"}]},
         404, None),
        ("negative dwell", {"requestId": first["requestId"], "events": [{"type": "dwell", "dwellMs": -1}]},
         422, "events[0].dwellMs"),
        # feedback the user cannot have given would count as clicks and raise CTR and MRR
        ("a doc the search did not answer", {"requestId": first["requestId"], "events": [
            {"type": "click", "docId": first["hits"][0]["id"]}, {"type": "click", "docId": "no-such-doc"}]},
         422, "events[1].docId"),
        ("a rank past the hits", {"requestId": first["requestId"], "events": [{"type": "click", "position": 4}]},
         422, "events[0].position"),
        ("a position that is not the doc's", {"requestId": first["requestId"], "events": [
            {"type": "click", "docId": first["hits"][0]["id"], "position": 2}]}, 422, "events[0].position"),
        ("dwell without dwellMs", {"requestId": first["requestId"], "events": [{"type": "dwell"}]},
         422, "events[0].dwellMs"),
        ("dwellMs on a skip", {"requestId": first["requestId"], "events": [{"type": "skip", "dwellMs": 5}]},
         422, "events[0].dwellMs"),
        ("dwell over a day", {"requestId": first["requestId"], "events": [{"type": "dwell", "dwellMs": 1e308}]},
         422, "events[0].dwellMs"),
        ("position true", {"requestId": first["requestId"], "events": [{"type": "click", "position": True}]},
         422, "events[0].position"),
        ("feedback without JSON content type", b'{"requestId": "x", "events": [{"type": "complaint"}]}', 422, "body"),
        # chunked, so only the limit on what is read can refuse it (FastAPI's reader made this a 400)
        ("a 2 MB chunked feedback body", iter([b'{"requestId": "'] + [b"a" * 2**16] * 32 + [b'"}']), 413, "body"),
        ("no events", {"requestId": first["requestId"], "events": []}, 422, "events"),
        # placed past the last hit, such a click counted as a click on nothing and raised CTR
        ("a click on no document", {"requestId": first["requestId"], "events": [{"type": "click"}]},
         422, "events[0].docId"),
        ("a dwell on no document", {"requestId": first["requestId"], "events": [{"type": "dwell", "dwellMs": 9}]},
         422, "events[0].docId"),
    ]
    assert len(cases) + len(feedback_cases) >= 12
    for case, index, body, headers, status, field in cases:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = server.client.post(f"/v1/indexes/{index}/search", content=content, headers=headers)
        assert r.status_code == status, (case, r.status_code, r.text[:300])
        payload = r.json()
        assert "Traceback" not in r.text and payload["error"], case
        if field is not None:
            assert payload["field"] == field, (case, payload)
        if status == 409:  # names both fingerprints
            assert "0123456789ab" in payload["error"] and first["model"]["key"] in payload["error"]
        good = server.search(**GOOD)
        assert good.status_code == 200 and good.json()["hits"], (case, good.text)
    for case, body, status, field in feedback_cases:
        kind = "text/plain" if isinstance(body, bytes) else "application/json"
        r = (server.client.post("/v1/indexes/quickstart/feedback", json=body) if isinstance(body, dict) else
             server.client.post("/v1/indexes/quickstart/feedback", content=body, headers={"content-type": kind}))
        assert r.status_code == status, (case, r.text)
        if field is not None:
            assert r.json()["field"] == field, (case, r.json())
        assert server.search(**GOOD).status_code == 200
    metrics = server.client.get("/metrics").text
    assert 'controller_serve_errors_total{code="409",index="quickstart",role="stable",version="v1"} 1.0' in metrics
    # refused by the size limit before any route ran: counted all the same (the feedback one is not a search)
    assert 'controller_serve_errors_total{code="413",index="quickstart",role="-",version="-"} 1.0' in metrics
    assert "alice" not in metrics and "bob" not in metrics  # no keys as labels


def test_index_without_version_is_503_with_retry_after(fresh_store, serve):
    _, store = fresh_store
    (store / "indexes" / "empty").mkdir(parents=True)
    server = serve(store)
    r = server.search("empty", query="a")
    assert r.status_code == 503 and r.headers["retry-after"] and "no version" in r.json()["error"]
    assert server.search(**GOOD).status_code == 200


def test_vector_search_on_precomputed_and_openapi(built_store, serve):
    _, store = built_store
    server = serve(store)
    listing = server.client.get("/v1/indexes").json()["indexes"]
    key = listing["pre"]["models"]["p1"]
    r = server.search("pre", vector=[0.5] * 16, model=key, k=4)
    assert r.status_code == 200 and r.headers["x-index-version"] == "p1" and len(r.json()["hits"]) == 4
    assert [h["rank"] for h in r.json()["hits"]] == [1, 2, 3, 4]
    assert server.client.get("/docs").status_code == 200
    assert "/v1/indexes/{name}/search" in server.client.get("/openapi.json").json()["paths"]
