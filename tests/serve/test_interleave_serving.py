"""The interleave step through a real `controller serve`: team-draft lists, teams logged per position."""

from __future__ import annotations

import json
import time
from pathlib import Path

from controller.core.routing import bucket, bucket_and_unit
from controller.core.types import Routing
from controller.store.fs import Store


def impressions(store: Path, index: str = "quickstart") -> list[dict]:
    out = []
    for segment in sorted((store / "events" / index).glob("*.jsonl")):
        out += [json.loads(l) for l in segment.read_text().splitlines() if l.strip()]
    return [r for r in out if r.get("type") == "impression"]


def test_interleaved_queries_merge_both_versions_and_log_teams(fresh_store, serve):
    _, store = fresh_store
    st = Store(store)
    r = st.routing("quickstart")
    # weight 0: without interleaving every query would get the stable's list
    st.write_routing("quickstart", "quickstart", Routing(stable=r.stable, candidate=r.candidate, weight=0.0,
                                                        interleave=50.0))
    server = serve(store, "--flush-window", "0.2")
    keys = [f"user-{i}" for i in range(40)]
    responses = {k: server.search(query="vector database drift", k=6, key=k).json() for k in keys}
    inside = [k for k in keys if bucket(f"interleave/{k}") < 50]
    assert 5 < len(inside) < 35  # the share follows the interleave bucket, not the weight's
    stable_only = server.search(query="vector database drift", k=6, key=next(k for k in keys if k not in inside))
    deadline = time.monotonic() + 10
    while len(impressions(store)) < len(keys) + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    logged = {i["requestId"]: i for i in impressions(store)}
    for key in keys:
        body = responses[key]
        record = logged[body["requestId"]]
        # the key's id, never the key: interleaved or not, a user's impressions group under one unit
        assert record["unit"] == bucket_and_unit(key)[1] and key not in json.dumps(record)
        if key in inside:
            assert record["mode"] == "interleave" and record["version"] == r.candidate
            assert len(record["teams"]) == len(body["hits"]) == 6
            assert set(record["teams"]) == {"stable", "candidate"}
            assert abs(record["teams"].count("stable") - 3) <= 1  # team draft: balanced teams
            assert record["ids"] == [h["id"] for h in body["hits"]] and len(set(record["ids"])) == 6
        else:
            assert "mode" not in record and body["version"] == r.stable
    assert stable_only.json()["version"] == r.stable
    keyless = server.search(query="vector database drift", k=6).json()
    deadline = time.monotonic() + 10
    while keyless["requestId"] not in {i["requestId"] for i in impressions(store)} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert next(i for i in impressions(store) if i["requestId"] == keyless["requestId"])["unit"] is None
    # a click on an interleaved list is feedback like any other (credited to its team by engine/online)
    first = responses[inside[0]]
    ok = server.client.post("/v1/indexes/quickstart/feedback",
                            json={"requestId": first["requestId"], "events": [{"type": "click", "position": 2}]})
    assert ok.status_code == 200
