"""Sticky routing over HTTP: the documented bucket contract, measured through a real server."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from controller.core.routing import bucket
from tests.serve.conftest import controller, with_percentage

KEYS = [f"user-{i}" for i in range(10_000)]


def _versions(url: str, keys: list[str]) -> dict[str, str]:
    def chunk(part: list[str]) -> dict[str, str]:
        out = {}
        with httpx.Client(base_url=url, timeout=10) as client:
            for key in part:
                r = client.post("/v1/indexes/quickstart/search", json={"query": "vitamin", "k": 1, "key": key})
                assert r.status_code == 200, r.text
                body = r.json()
                assert r.headers["x-index-version"] == body["version"]
                assert body["role"] == ("candidate" if body["version"] == "v2" else "stable")
                out[key] = body["version"]
        return out

    parts = [keys[i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        merged: dict[str, str] = {}
        for result in pool.map(chunk, parts):
            merged.update(result)
    return merged


def _wait_for_weight(server, weight: float) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.client.get("/v1/indexes").json()["indexes"]["quickstart"]["weight"] == weight:
            return
        time.sleep(0.05)
    raise AssertionError(f"the service never followed the routing record to weight {weight}")


@pytest.mark.slow
def test_sticky_share_and_no_key_moves_back_when_the_weight_rises(fresh_store, serve):
    ws, store = fresh_store
    server = serve(store)
    at25 = _versions(server.url, KEYS)
    share = sum(v == "v2" for v in at25.values()) / len(KEYS)
    assert 0.235 <= share <= 0.265, share
    # the bucket contract: sha256(key)[:8] big-endian / 2^64 * 100 < weight -> candidate
    assert all((bucket(k) < 25) == (v == "v2") for k, v in at25.items())
    assert controller("reconcile", str(with_percentage(ws, "v2-canary.yaml", 50, "v2-50.yaml")),
                      "--store", str(store)) == 0
    _wait_for_weight(server, 50.0)
    at50 = _versions(server.url, KEYS)
    moved_back = [k for k in KEYS if at25[k] == "v2" and at50[k] == "v1"]
    assert moved_back == []
    share50 = sum(v == "v2" for v in at50.values()) / len(KEYS)
    assert 0.485 <= share50 <= 0.515, share50
