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


def health_routes(rt: Runtime, is_alive: Callable[[], bool]) -> dict[str, Callable[[], tuple[int, bytes, str]]]:
    def healthz() -> tuple[int, bytes, str]:
        return (200, b"ok\n", "text/plain") if is_alive() else (503, b"operator loop stopped\n", "text/plain")

    def readyz() -> tuple[int, bytes, str]:
        # Ready once kopf started (standbys waiting for the lease are alive but not ready).
        return (200, b"ready\n", "text/plain") if rt.ready.is_set() else (503, b"not started\n", "text/plain")

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


async def run_kopf(rt: Runtime, options: OperatorOptions, stop_flag: Any, ready_flag: Any = None,
                   registry: kopf.OperatorRegistry | None = None) -> None:
    await kopf.operator(
        registry=registry or build_registry(rt),
        standalone=True,  # leadership is the Lease's job, not kopf peering's
        clusterwide=options.all_namespaces,
        namespaces=() if options.all_namespaces else options.namespaces,
        stop_flag=stop_flag,
        ready_flag=ready_flag,
    )


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
    servers = []
    if options.health_port:
        servers.append(serve_http(options.health_port,
                                  health_routes(rt, lambda: loop_alive.is_set() or not rt.ready.is_set())))
    if options.metrics_port:
        servers.append(serve_http(options.metrics_port, metrics_routes(rt)))
    elector: LeaseElector | None = None
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

            threading.Thread(target=elector.keep_renewing, args=(stop, step_down), name="lease",
                             daemon=True).start()
        loop_alive.set()
        try:
            asyncio.run(run_kopf(rt, options, stop_flag=stop, registry=registry))
        except KeyboardInterrupt:
            pass
    finally:
        loop_alive.clear()
        stop.set()
        if elector is not None and not lost.is_set():
            elector.release()  # a clean shutdown hands over at once instead of after the lease duration
        for server in servers:
            server.shutdown()
    return 1 if lost.is_set() else 0


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
