"""provider: http against a real loopback server: results, options, retries, faults, secrets."""

from __future__ import annotations

import time

import numpy as np
import pytest

from controller.embed import make_embedder
from controller.errors import EmbedError, InvalidInput
from controller.manifest.models import ModelSpec
from tests.embed.fake_openai import FakeEmbeddingServer, vector_for

KEY = "sk-test-7f3a9c2e51d84b06a1e2"


def model(base_url: str, dim: int = 32, **options) -> dict:
    return {"provider": "http", "name": "fake", "version": "1", "dim": dim,
            "options": {"baseUrl": base_url, "backoff": 0.01, "maxBackoff": 2, **options}}


@pytest.fixture
def server():
    with FakeEmbeddingServer(dim=32) as srv:
        yield srv


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_vectors_come_back_in_order_through_batches_and_threads(server):
    texts = [f"document number {i}" for i in range(23)]
    emb = make_embedder(model(server.base_url, batchSize=3, concurrency=4, documentPrefix="passage: "), {})
    seen = []
    out = emb.embed_documents([str(i) for i in range(23)], texts, progress=lambda d, t: seen.append((d, t)))
    expected = unit(np.stack([vector_for("passage: " + t, 32) for t in texts]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert len(server.requests) == 8 and max(len(r["body"]["input"]) for r in server.requests) == 3
    assert seen[-1] == (23, 23)


def test_query_path_uses_query_prefix_and_input_type(server):
    emb = make_embedder(model(server.base_url, queryPrefix="query: ", documentPrefix="passage: ",
                              inputType={"query": "query", "document": "passage"}, dimensions=32), {})
    out = emb.embed_queries(["q1"], ["vitamin d"])
    body = server.requests[-1]["body"]
    assert body["input"] == ["query: vitamin d"] and body["input_type"] == "query" and body["dimensions"] == 32
    np.testing.assert_allclose(out[0], unit(vector_for("query: vitamin d", 32)), rtol=1e-5, atol=1e-6)
    emb.embed_documents(["d"], ["text"])
    assert server.requests[-1]["body"]["input"] == ["passage: text"]
    assert server.requests[-1]["body"]["input_type"] == "passage"


def test_truncation_policies(server):
    make_embedder(model(server.base_url, truncate="client", maxChars=4), {}).embed_documents(["a"], ["abcdefgh"])
    assert server.requests[-1]["body"]["input"] == ["abcd"] and "truncate" not in server.requests[-1]["body"]
    make_embedder(model(server.base_url, truncate="server"), {}).embed_documents(["a"], ["abcdefgh"])
    assert server.requests[-1]["body"]["truncate"] is True


def test_api_key_comes_from_the_named_environment_variable(monkeypatch):
    with FakeEmbeddingServer(dim=8, api_key=KEY) as srv:
        monkeypatch.setenv("EIC_TEST_KEY", KEY)
        emb = make_embedder(model(srv.base_url, dim=8, apiKeyEnv="EIC_TEST_KEY"), {})
        assert emb.embed_documents(["a"], ["x"]).shape == (1, 8)
        assert srv.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
        assert KEY not in repr(emb.fingerprint) and KEY not in repr(emb.opts)
        monkeypatch.delenv("EIC_TEST_KEY")
        with pytest.raises(EmbedError, match="EIC_TEST_KEY .*not set"):
            emb.embed_documents(["a"], ["x"])


def test_a_server_echoing_the_key_never_puts_it_in_the_error(monkeypatch, server):
    monkeypatch.setenv("EIC_TEST_KEY", KEY)
    server.always = "echo401"
    emb = make_embedder(model(server.base_url, apiKeyEnv="EIC_TEST_KEY"), {})
    with pytest.raises(EmbedError) as err:
        emb.embed_documents(["a"], ["x"])
    assert "HTTP 401" in str(err.value) and "rejected Bearer ***" in str(err.value)
    assert KEY not in str(err.value)
    assert len(server.requests) == 1  # a 401 is not retried


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "truncated", "wrongdim"])
def test_each_transient_fault_is_retried_then_succeeds(server, fault):
    server.faults.extend([fault, fault])
    emb = make_embedder(model(server.base_url, batchSize=4, concurrency=1, timeout=0.5, retries=3), {})
    server.stall = 1.5
    texts = [f"t{i}" for i in range(8)]
    out = emb.embed_documents(texts, texts)
    np.testing.assert_allclose(out, unit(np.stack([vector_for(t, 32) for t in texts])), rtol=1e-5, atol=1e-6)
    assert len(server.requests) == 4  # two failed attempts of batch 1, then batches 1 and 2


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "truncated", "wrongdim"])
def test_a_persistent_fault_names_the_provider_and_the_batch(server, fault):
    texts = [f"t{i}" for i in range(10)]
    emb = make_embedder(model(server.base_url, batchSize=4, concurrency=1, timeout=0.3, retries=2), {})
    server.stall = 1.0
    emb.embed_documents(texts[:4], texts[:4])  # batch 1 is fine
    server.always = fault
    with pytest.raises(EmbedError) as err:
        emb.embed_documents(texts, texts)
    message = str(err.value)
    assert "provider http (model 'fake'" in message and "failed after 3 attempts" in message
    assert "batch 1/3 (rows 0-3, 4 texts, first id 't0')" in message
    expected = {"429": "HTTP 429", "500": "HTTP 500", "timeout": "no answer within 0.3s",
                "truncated": "unreadable response", "wrongdim": "31 dimensions but spec.model.dim is 32"}[fault]
    assert expected in message


def test_retry_after_is_honoured(server):
    server.retry_after = "1"
    server.faults.append("429")
    emb = make_embedder(model(server.base_url, retries=2, backoff=0.01), {})
    started = time.monotonic()
    emb.embed_documents(["a"], ["x"])
    first, second = server.requests[0]["time"], server.requests[1]["time"]
    assert second - first >= 0.95 and time.monotonic() - started >= 0.95


def test_a_bad_request_is_not_retried(server):
    emb = make_embedder(model(server.base_url.replace("/v1", "/nope"), retries=5), {})
    with pytest.raises(EmbedError, match="HTTP 404 Not Found"):
        emb.embed_documents(["a"], ["x"])
    assert len(server.requests) == 1


@pytest.mark.parametrize("options, field", [
    ({"apiKey": KEY}, "spec.model.options.apiKey"),
    ({"token": KEY}, "spec.model.options.token"),
    ({"baseUrl": "ftp://x"}, "spec.model.options.baseUrl"),
    ({"batchSize": 0}, "spec.model.options.batchSize"),
    ({"dimensions": 16}, "spec.model.options.dimensions"),
    ({"truncate": "client"}, "spec.model.options.maxChars"),
    ({"truncate": "middle"}, "spec.model.options.truncate"),
    ({"inputType": "query"}, "spec.model.options.inputType"),
    ({"apiKeyEnv": "not a name"}, "spec.model.options.apiKeyEnv"),
    ({"batchsize": 8}, "spec.model.options.batchsize"),
])
def test_bad_options_are_refused_naming_the_field_and_never_echoing_a_key(options, field):
    doc = model("http://127.0.0.1:9/v1")
    doc["options"].update(options)
    with pytest.raises(InvalidInput) as err:
        make_embedder(doc, {}, manifest=None)
    assert err.value.field == field
    assert KEY not in str(err.value)


def test_throughput_options_and_key_location_are_not_part_of_the_fingerprint():
    base = ModelSpec.model_validate(model("http://a:1/v1", documentPrefix="passage: ")).fingerprint()
    moved = ModelSpec.model_validate(model("http://b:2/v1", documentPrefix="passage: ", batchSize=7,
                                           concurrency=9, timeout=5, retries=1, apiKeyEnv="K",
                                           secretRef={"name": "s", "key": "k"})).fingerprint()
    other = ModelSpec.model_validate(model("http://a:1/v1", documentPrefix="")).fingerprint()
    assert base == moved
    assert base != other


def test_secret_ref_reads_the_key_the_operator_job_exposes_and_says_where_it_is_missing(monkeypatch):
    from controller.embed.http import SECRET_ENV

    with FakeEmbeddingServer(dim=8, api_key="sk-from-secret-7f3a") as server:
        emb = make_embedder(model(server.base_url, dim=8, secretRef={"name": "openai", "key": "apiKey"}), {})
        monkeypatch.delenv(SECRET_ENV, raising=False)
        with pytest.raises(EmbedError, match="apiKeyEnv") as info:
            emb.embed_documents(["a"], ["x"])
        assert SECRET_ENV in str(info.value) and server.requests == []
        monkeypatch.setenv(SECRET_ENV, "sk-from-secret-7f3a")  # what the Job pod's secretKeyRef sets
        assert emb.embed_documents(["a"], ["x"]).shape == (1, 8)
        assert server.requests[-1]["headers"]["Authorization"] == "Bearer sk-from-secret-7f3a"


def test_a_restarted_server_costs_no_attempt():
    """A kept-alive connection the server closed fails at once on its next use; it is replaced and the
    request sent again (as urllib3 does). Before, the first query of each thread after an embedding
    server restart failed with retries: 0 (BrokenPipeError) and the search service answered 500."""
    from tests.serve.test_mirror import EmbedderProcess

    process = EmbedderProcess()
    process.start()
    try:
        emb = make_embedder(model(process.base_url, retries=0), {})
        first = emb.embed_queries(["q"], ["vitamin d"])
        process.start()  # stopped and started again on the same port: the kept-alive connection is dead
        np.testing.assert_array_equal(emb.embed_queries(["q"], ["vitamin d"]), first)
        process.stop()
        with pytest.raises(EmbedError, match="connection failed"):  # a server that is gone is still an error
            emb.embed_queries(["q"], ["vitamin d"])
    finally:
        process.stop()
