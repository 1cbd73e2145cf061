"""Process wiring: logging, health and metrics endpoints, leader election, then kopf.

`controller operator` calls `run(...)`; tests call `start_in_thread(...)` to run
the very same operator against an API emulator.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import kopf

from controller.errors import ControllerError
from controller.operator.handlers import Runtime, build_registry
from controller.operator.leader import LeaseElector

log = logging.getLogger("controller.operator")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: what log collectors (Loki, Cloud Logging) parse without rules."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        k8s = getattr(record, "k8s_ref", None)  # kopf attaches the object reference to its records
        if k8s:
            out["object"] = k8s
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(fmt: str, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("[%(asctime)s] %(name)-24s %(levelname)-7s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def serve_http(port: int, routes: dict[str, Callable[[], tuple[int, bytes, str]]], host: str = "0.0.0.0"
               ) -> ThreadingHTTPServer:
    """A tiny threaded HTTP server for /healthz, /readyz and /metrics (no framework needed)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server API
            route = routes.get(self.path.split("?")[0])
            code, payload, ctype = route() if route else (404, b"not found\n", "text/plain")
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:  # probes every few seconds: keep logs quiet
            return None

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name=f"http-{port}", daemon=True).start()
    return server


def health_routes(rt: Runtime, is_alive: Callable[[], bool], has_credentials: Callable[[], bool] = lambda: True
                  ) -> dict[str, Callable[[], tuple[int, bytes, str]]]:
    def healthz() -> tuple[int, bytes, str]:
        return (200, b"ok\n", "text/plain") if is_alive() else (503, b"operator loop stopped\n", "text/plain")

    def readyz() -> tuple[int, bytes, str]:
        # Ready once kopf started (standbys waiting for the lease are alive but not ready) and while it holds
        # API credentials: without them it watches nothing, and a 200 would hide that.
        if not rt.ready.is_set():
            return 503, b"not started\n", "text/plain"
        if not has_credentials():
            return 503, b"no working API credentials (login failed or every token was refused)\n", "text/plain"
        return 200, b"ready\n", "text/plain"

    return {"/healthz": healthz, "/readyz": readyz}


def metrics_routes(rt: Runtime) -> dict[str, Callable[[], tuple[int, bytes, str]]]:
    return {"/metrics": lambda: (200, rt.metrics.exposition(), "text/plain; version=0.0.4; charset=utf-8")}


@dataclass
class OperatorOptions:
    """How to run kopf: scope, leadership and endpoints (the handlers' own settings are OperatorConfig)."""

    namespaces: tuple[str, ...] = ()
    all_namespaces: bool = False
    health_port: int | None = None
    metrics_port: int | None = None
    leader_elect: bool = False
    lease_name: str = "embedding-index-controller"
    lease_namespace: str = "default"
    lease_duration: int = 15
    renew_deadline: float = 10.0
    identity: str = field(default_factory=lambda: os.environ.get("POD_NAME") or socket.gethostname())


class Credentials:
    """Whether kopf holds API credentials right now, for /readyz.

    kopf keeps them in a vault that it empties when a login returns nothing or the server refuses
    every token (401). kopf does not export the vault class, hence the guarded import: without it,
    readiness falls back to "kopf started".
    """

    def __init__(self) -> None:
        self.vault: Any = None

    def new_vault(self) -> Any:
        """A vault for kopf.operator (created in its event loop), or None when this kopf has none to give."""
        try:
            from kopf._cogs.structs.credentials import Vault
        except ImportError:
            return None
        self.vault = Vault()
        return self.vault

    def present(self) -> bool:
        if self.vault is None:
            return True  # unknown: kopf not started yet (readyz says so) or a kopf without the vault
        try:
            return not self.vault.is_empty()
        except RuntimeError:  # kopf replaced the credentials while this thread read them: a login just ran
            return True


def with_cluster_login(registry: kopf.OperatorRegistry) -> kopf.OperatorRegistry:
    """Add kopf's login from the official client: in-cluster service account, else kubeconfig.

    kopf adds its fallback logins only to its own default registry, not to a kopf.OperatorRegistry()
    like build_registry's; without this the operator never authenticates and reconciles nothing.
    The same source as kube_api_client, so kopf and our own API calls use one identity.
    """
    kopf.on.login(registry=registry, id="login_via_client")(kopf.login_via_client)
    return registry


def set_on_cleanup(registry: kopf.OperatorRegistry, stop_flag: threading.Event) -> None:
    """Set `stop_flag` in kopf's cleanup activity, however kopf was stopped (a signal, too).

    kopf waits for a threading.Event in a thread of the loop's default executor. After a SIGTERM nobody
    else set it: kopf gave that waiter its 5 s grace for hung tasks, then asyncio.run joined the
    thread forever, and the process hung until SIGKILL without releasing the Lease.
    """
    @kopf.on.cleanup(registry=registry, id="set_the_stop_flag")
    def _set_the_stop_flag(**_: Any) -> None:
        stop_flag.set()


async def run_kopf(rt: Runtime, options: OperatorOptions, stop_flag: threading.Event, ready_flag: Any = None,
                   registry: kopf.OperatorRegistry | None = None, credentials: Credentials | None = None) -> None:
    """Run kopf until it stops: `stop_flag` set, a signal (SIGTERM, SIGINT), or a fatal error.

    A caller passing its own registry brings its own @kopf.on.login (the tests log in to an emulator).
    """
    registry = registry or with_cluster_login(build_registry(rt))
    set_on_cleanup(registry, stop_flag)
    try:
        await kopf.operator(
            registry=registry,
            standalone=True,  # leadership is the Lease's job, not kopf peering's
            clusterwide=options.all_namespaces,
            namespaces=() if options.all_namespaces else options.namespaces,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
            vault=credentials.new_vault() if credentials is not None else None,
        )
    except kopf.LoginError as exc:  # kopf's own message suggests installing a client library: not the cause
        raise ControllerError("kopf stopped: the Kubernetes API refused every credential the operator has, also "
                              "after a fresh login (401 Unauthorized); check its ServiceAccount token or "
                              "kubeconfig") from exc
    finally:
        stop_flag.set()  # also when kopf ended before its cleanup activity ran (a failed startup)


def kube_api_client() -> Any:
    """The official client, configured like kopf's own fallback login: in-cluster, else kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as exc:
            raise ControllerError(
                "no Kubernetes API to talk to: not running in a cluster and no usable kubeconfig "
                f"({exc}); set KUBECONFIG or run the operator in a pod") from exc
    return client.ApiClient()


def run(rt: Runtime, options: OperatorOptions, *, registry: kopf.OperatorRegistry | None = None,
        api_client: Any = None, stop: threading.Event | None = None) -> int:
    """Blocks until the operator stops (or `stop` is set); 1 when it stopped because the lease was lost."""
    stop = stop or threading.Event()
    loop_alive = threading.Event()
    lost = threading.Event()
    credentials = Credentials()
    servers = []
    if options.health_port:
        servers.append(serve_http(options.health_port,
                                  health_routes(rt, lambda: loop_alive.is_set() or not rt.ready.is_set(),
                                                credentials.present)))
    if options.metrics_port:
        servers.append(serve_http(options.metrics_port, metrics_routes(rt)))
    elector: LeaseElector | None = None
    renewer: threading.Thread | None = None
    try:
        if options.leader_elect:
            elector = LeaseElector(api_client or kube_api_client(), options.lease_namespace, options.lease_name,
                                   options.identity, options.lease_duration, options.renew_deadline)
            log.info("waiting for lease %s/%s as %s", options.lease_namespace, options.lease_name,
                     options.identity)
            if not elector.wait_for_leadership(stop):
                return 0
            rt.may_write = elector.holds_lease  # checked before each write from now on

            def step_down() -> None:
                lost.set()
                stop.set()

            renewer = threading.Thread(target=elector.keep_renewing, args=(stop, step_down), name="lease",
                                       daemon=True)
            renewer.start()
        loop_alive.set()
        try:
            asyncio.run(run_kopf(rt, options, stop_flag=stop, registry=registry, credentials=credentials))
        except KeyboardInterrupt:
            pass
    finally:
        loop_alive.clear()
        stop.set()
        if elector is not None and not lost.is_set():
            release_lease(elector, renewer)
        for server in servers:
            server.shutdown()
    return 1 if lost.is_set() else 0


def release_lease(elector: LeaseElector, renewer: threading.Thread | None) -> None:
    """Hand the lease over at once instead of after its duration (a clean shutdown).

    The renewer is joined first: a renewal round still in flight would otherwise see the released
    lease as free and take it again.
    """
    if renewer is not None:
        renewer.join(2 * elector.request_timeout + elector.retry_period)
    elector.release()


@dataclass
class OperatorThread:
    """An operator running in a background thread (tests, embedding)."""

    thread: threading.Thread
    stop_flag: threading.Event
    ready_flag: threading.Event
    errors: list[BaseException]

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_flag.set()
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"the operator did not stop within {timeout:g}s")


def start_in_thread(rt: Runtime, options: OperatorOptions, registry: kopf.OperatorRegistry | None = None
                    ) -> OperatorThread:
    stop, ready, errors = threading.Event(), threading.Event(), []

    def target() -> None:
        try:
            asyncio.run(run_kopf(rt, options, stop_flag=stop, ready_flag=ready, registry=registry))
        except BaseException as exc:  # surfaced to the test through .errors
            errors.append(exc)

    thread = threading.Thread(target=target, name="operator", daemon=True)
    thread.start()
    return OperatorThread(thread, stop, ready, errors)
