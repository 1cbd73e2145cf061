"""Webhook target policy: schemes, private targets, a notifier thread that never dies, a bounded exit."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

from controller.errors import InvalidInput
from controller.engine.notify import (ALLOW_PRIVATE_ENV, WEBHOOK_ANNOTATION, WEBHOOK_ENV, Notifier, make_notifier,
                                      url_problem)
from controller.gitops.sync import SyncSource, sync_once
from controller.store.fs import Store

from .conftest import GitRepo, manifest, run_cli
from .test_notify import Receiver

EVENT = {"event": "AliasSwitched", "version": "v2", "weight": 0.0}


@pytest.fixture(autouse=True)
def _default_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)
    monkeypatch.delenv(WEBHOOK_ENV, raising=False)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


BAD_SCHEMES = ["file:///etc/passwd", "data:text/plain,hello", "example.com/hook", "/var/run/hook.sock",
               "ftp://example.com/hook", "gopher://example.com/", "javascript:alert(1)", "http:///no-host",
               "http://example.com:99999/port", "https://example.com:x/"]


@pytest.mark.parametrize("url", BAD_SCHEMES)
def test_only_http_and_https_urls_with_a_host_are_accepted(tmp_path: Path, url: str):
    with pytest.raises(InvalidInput) as info:
        make_notifier(tmp_path, url, allow_private=True)  # even with private targets allowed
    message = str(info.value)
    assert "\n" not in message and repr(url) in message and "--webhook" in message


PRIVATE = ["http://127.0.0.1:8080/hook", "http://127.1.2.3/", "http://localhost/hook", "http://LOCALHOST./x",
           "http://app.localhost/x", "http://[::1]:80/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/latest",
           "http://[fe80::1]/", "http://0.0.0.0:8000/", "https://224.0.0.1/", "http://240.0.0.1/"]


@pytest.mark.parametrize("url", PRIVATE)
def test_loopback_link_local_and_special_targets_are_refused_unless_allowed(tmp_path: Path, url: str):
    with pytest.raises(InvalidInput) as info:
        make_notifier(tmp_path, url)
    assert "--allow-private-webhooks" in str(info.value) and "\n" not in str(info.value)
    assert make_notifier(tmp_path, url, allow_private=True).global_url == url


@pytest.mark.parametrize("url", ["https://hooks.example.com/services/x", "http://10.0.0.7:8080/hook",
                                 "http://receiver.monitoring.svc.cluster.local/hook", "https://[2001:db8::1]/"])
def test_public_and_in_cluster_targets_are_accepted(url: str):
    assert url_problem(url, allow_private=False) is None


def test_the_setting_in_the_environment_allows_private_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    assert make_notifier(tmp_path, "http://127.0.0.1:1/").allow_private
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "0")
    with pytest.raises(InvalidInput):
        make_notifier(tmp_path, "http://127.0.0.1:1/")


def test_a_bad_global_url_from_the_environment_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(WEBHOOK_ENV, "file:///etc/shadow")
    with pytest.raises(InvalidInput, match=r"\$CONTROLLER_WEBHOOK"):
        make_notifier(tmp_path, None)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:,x", "no-scheme/hook", "http://[::1"])
def test_the_notifier_thread_survives_any_url_and_close_is_immediate(url: str):
    """Such URLs are refused at start-up; a Notifier built around the check must still not crash or hang."""
    logs: list[str] = []
    notifier = Notifier(global_url=url, first_backoff=0.01, log=logs.append)
    started = time.monotonic()
    notifier("idx", dict(EVENT))
    notifier("idx", {**EVENT, "version": "v3"})
    notifier.close()
    assert time.monotonic() - started < 2.0, "a refused URL is dropped at once, not retried for 30 s"
    assert len(notifier.failed) == 2 and notifier.sent == []
    assert notifier._thread is not None and not any("Traceback" in line for line in logs)
    assert all("refused" in line or "dropped" in line for line in logs)


def test_a_private_target_is_refused_at_delivery_too(receiver: Receiver):
    notifier = Notifier(global_url=receiver.url, log=lambda m: None)  # allow_private False
    notifier("idx", dict(EVENT))
    notifier.close()
    assert receiver.requests == 0 and len(notifier.failed) == 1


def _loopback_alias() -> str | None:
    """A host name other than localhost that /etc/hosts maps to a loopback address, if any."""
    try:
        lines = Path("/etc/hosts").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            loop = ipaddress.ip_address(fields[0]).is_loopback and ipaddress.ip_address(fields[0]).version == 4
        except ValueError:
            continue
        for name in fields[1:]:
            if loop and "localhost" not in name.lower():
                return name
    return None


def test_a_host_name_that_resolves_to_loopback_is_refused_when_connecting(receiver: Receiver):
    alias = _loopback_alias()
    if alias is None:
        pytest.skip("no non-localhost loopback name in /etc/hosts")
    url = receiver.url.replace("127.0.0.1", alias)
    assert url_problem(url, allow_private=False) is None, "a name passes the static check..."
    logs: list[str] = []
    notifier = Notifier(global_url=url, log=logs.append)
    notifier("idx", dict(EVENT))
    notifier.close()
    assert receiver.requests == 0, "...but not the connect-time check on the resolved address"
    assert any("resolves to 127." in line and "loopback" in line for line in logs)
    allowed = Notifier(global_url=url, log=lambda m: None, allow_private=True)
    allowed("idx", dict(EVENT))
    allowed.close()
    assert receiver.requests == 1


def test_a_refused_annotation_is_logged_and_the_sync_still_applies(git_repo: GitRepo, tmp_path: Path,
                                                                    receiver: Receiver,
                                                                    capsys: pytest.CaptureFixture[str]):
    store = Store(tmp_path / "store")
    for url in (receiver.url, "http://169.254.169.254/latest/meta-data", "file:///etc/passwd"):
        git_repo.commit(manifest("v1", annotations={WEBHOOK_ANNOTATION: url}), f"hook {url}")
        assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store).ok
        err = capsys.readouterr().err
        assert f"annotation {WEBHOOK_ANNOTATION}={url!r} refused" in err and "index quickstart" in err
    assert store.routing("quickstart").stable == "v1"
    assert receiver.requests == 0
    # allowed explicitly, the same annotation is delivered
    git_repo.commit(manifest("v2", 100, annotations={WEBHOOK_ANNOTATION: receiver.url}), "v2")
    assert sync_once(SyncSource(str(git_repo.path), "main", "indexes"), store, allow_private_webhooks=True).ok
    assert ("AliasSwitched", "v2") in receiver.events()


def test_the_cli_refuses_a_bad_webhook_before_writing_anything(git_repo: GitRepo, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]):
    git_repo.commit(manifest("v1"), "v1")
    store = tmp_path / "store"
    for url in ("file:///etc/passwd", "http://127.0.0.1:9/x"):
        code = run_cli(["sync", "--repo", str(git_repo.path), "--branch", "main", "--path", "indexes", "--once",
                        "--store", str(store), "--webhook", url])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err and url in err
        assert not store.exists(), "refused before the first write"
    code = run_cli(["sync", "--repo", str(git_repo.path), "--branch", "main", "--path", "indexes", "--once",
                    "--store", str(store), "--webhook", "http://127.0.0.1:9/x", "--allow-private-webhooks"])
    assert code == 0


class _Silent:
    """A receiver that accepts the connection and never answers."""

    def __init__(self) -> None:
        self.release = threading.Event()
        release = self.release

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                release.wait(60)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def test_exit_is_delayed_at_most_by_the_close_bound_when_the_receiver_hangs():
    silent = _Silent()
    logs: list[str] = []
    try:
        notifier = Notifier(global_url=silent.url, allow_private=True, log=logs.append)
        notifier("idx", dict(EVENT))
        started = time.monotonic()
        notifier.close(timeout=1.0)
        assert time.monotonic() - started < 2.0
        assert any("still pending after 1s; dropped at exit" in line for line in logs)
    finally:
        silent.close()


def test_redirects_are_not_followed(receiver: Receiver):
    class Redirect(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.send_response(307)
            self.send_header("Location", receiver.url)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        notifier = Notifier(global_url=url, allow_private=True, first_backoff=0.01, log=lambda m: None)
        notifier("idx", dict(EVENT))
        assert notifier.flush(10)
        assert receiver.requests == 0 and len(notifier.failed) == 1
    finally:
        server.shutdown()
        server.server_close()
