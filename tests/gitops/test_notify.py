"""Webhooks against a local HTTP server: the events of a promote and a rollback, retries, dedupe."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from controller.engine.notify import ALLOW_PRIVATE_ENV, WEBHOOK_ANNOTATION, Notifier
from controller.gitops.sync import SyncSource, sync_once
from controller.store.fs import Store

from .conftest import GitRepo, manifest


class Receiver:
    """A webhook receiver on 127.0.0.1 that fails the first `fail_first` requests with 500."""

    def __init__(self, fail_first: int = 0, hold: threading.Event | None = None) -> None:
        self.posts: list[dict[str, Any]] = []
        self.requests = 0
        self.fail_first = fail_first
        self.hold = hold  # when given, every answer waits for it: a receiver that is slow to answer
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                receiver.requests += 1
                if receiver.requests <= receiver.fail_first:
                    self.send_response(500)
                else:
                    receiver.posts.append(json.loads(body))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[tuple[str, str]]:
        return [(p["event"], p["version"]) for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def _private_targets_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver listens on 127.0.0.1, a loopback target the policy refuses by default."""
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def test_promote_and_rollback_post_each_transition_once(git_repo: GitRepo, tmp_path: Path, receiver: Receiver):
    store = Store(tmp_path / "store")
    source = SyncSource(str(git_repo.path), "main", "indexes")
    hook = {WEBHOOK_ANNOTATION: receiver.url}  # per-index URL from the manifest

    c1 = git_repo.commit(manifest("v1", annotations=hook), "v1")
    assert sync_once(source, store).ok
    c2 = git_repo.commit(manifest("v2", 100, annotations=hook), "promote v2")
    assert sync_once(source, store).ok
    assert receiver.events() == [("ShadowBuilt", "v1"), ("GatesPassed", "v1"), ("AliasSwitched", "v1"),
                                 ("ShadowBuilt", "v2"), ("GatesPassed", "v2"), ("AliasSwitched", "v2")]
    assert [p["commit"] for p in receiver.posts] == [c1] * 3 + [c2] * 3
    switched = receiver.posts[-1]
    assert switched["stable"] == "v2" and switched["index"] == "quickstart" and switched["branch"] == "main"
    assert {g["metric"] for g in switched["gates"]} >= {"ndcg@10", "recall@10"}, "gate values travel along"

    c3 = git_repo.commit(manifest("v3", 100, annotations=hook), "v3: 64 buckets")
    assert sync_once(source, store).ok
    assert receiver.events()[6:] == [("ShadowBuilt", "v3"), ("GateFailed", "v3"), ("RolledBack", "v3")]
    failed = receiver.posts[7]
    assert failed["commit"] == c3
    bad = [g for g in failed["gates"] if not g["passed"]]
    assert bad and all(isinstance(g["value"], float) for g in bad)
    assert store.routing("quickstart").stable == "v2"

    before = len(receiver.posts)
    assert sync_once(source, store).ok  # same commit, nothing changes: nothing is posted
    assert len(receiver.posts) == before == 9


def test_failed_deliveries_are_retried_in_the_background(tmp_path: Path):
    hold = threading.Event()
    safety = threading.Timer(30, hold.set)  # only fires if notifying blocked (the assertion below then fails)
    safety.start()
    receiver = Receiver(fail_first=2, hold=hold)
    try:
        notifier = Notifier(global_url=receiver.url, first_backoff=0.05, log=lambda m: None,
                            allow_private=True)
        notifier("idx", {"event": "WeightChanged", "version": "v2", "weight": 10.0, "commit": "abc"})
        assert not hold.is_set() and receiver.posts == [], "notifying must not wait for the receiver"
        hold.set()
        assert notifier.flush(timeout=10)
        assert receiver.requests == 3 and receiver.events() == [("WeightChanged", "v2")]
    finally:
        safety.cancel()
        hold.set()
        receiver.close()


def test_an_unreachable_receiver_never_blocks_and_is_dropped_after_retries(tmp_path: Path):
    logs: list[str] = []
    notifier = Notifier(global_url="http://127.0.0.1:9/nothing-listens", first_backoff=0.01, log=logs.append,
                        allow_private=True)
    notifier("idx", {"event": "AliasSwitched", "version": "v2", "weight": 0.0})
    assert notifier.flush(timeout=20)
    assert len(notifier.failed) == 1 and any("dropped" in line for line in logs)


def test_an_unchanged_state_is_not_notified_twice_even_across_runs(tmp_path: Path, receiver: Receiver):
    state = tmp_path / "notified.json"
    event = {"event": "WeightChanged", "version": "v2", "weight": 25.0, "commit": "c1"}
    first = Notifier(global_url=receiver.url, state_file=state, allow_private=True)
    first("idx", event)
    first("idx", dict(event))
    first("idx", {**event, "weight": 50.0})
    first.close()
    second = Notifier(global_url=receiver.url, state_file=state, allow_private=True)  # e.g. the next `sync --once` run
    second("idx", dict(event))
    second("idx", {**event, "commit": "c2"})  # a new commit is a new state
    second.close()
    assert [(p["weight"], p["commit"]) for p in receiver.posts] == [(25.0, "c1"), (50.0, "c1"), (25.0, "c2")]
