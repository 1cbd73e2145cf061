"""`controller operator` as the Deployment runs it: the console script in its own process, logged in
through a kubeconfig (no test login handler), against the kmock emulator; and its flags' range checks.

The in-process fixtures (conftest.wire) register their own @kopf.on.login, so they never exercised
the CLI's login: it had none, and the shipped operator reconciled nothing while its probes said 200.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("kopf")

from controller.cli.main import main as cli  # noqa: E402
from controller.operator.handlers import OperatorConfig, Runtime  # noqa: E402
from controller.operator.main import health_routes, serve_http  # noqa: E402
from tests.operator.conftest import DATA_DIR, NAMESPACE, REPO, Api, eventually, example  # noqa: E402
from tests.operator.kmock_state import StatefulEmulator  # noqa: E402

CONSOLE_SCRIPT = REPO / ".venv" / "bin" / "controller"


def on_kmock(test: Any) -> Any:
    """The marks of an async test against the stateful emulator (the sync tests below need none)."""
    for mark in (pytest.mark.operator, pytest.mark.asyncio, pytest.mark.kmock(cls=StatefulEmulator)):
        test = mark(test)
    return test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:  # not listening yet
        return 0, str(exc)


def kubeconfig(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: kmock, cluster: {{server: "{server}"}}}}]
users: [{{name: op, user: {{token: a-token}}}}]
contexts: [{{name: kmock, context: {{cluster: kmock, user: op, namespace: {NAMESPACE}}}}}]
current-context: kmock
""")
    return path


class CliOperator:
    """The console script in a subprocess; its log is kept in a file for failure messages."""

    def __init__(self, cluster: Api, tmp_path: Path, *flags: str) -> None:
        self.health_port = free_port()
        self.log = tmp_path / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig(tmp_path, cluster.url)), "POD_NAME": "pod-cli"}
        env.pop("KUBERNETES_SERVICE_HOST", None)  # never the in-cluster login of a CI runner's pod
        script = CONSOLE_SCRIPT if CONSOLE_SCRIPT.exists() else "controller"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                [str(script), "operator", "-n", NAMESPACE, "--store", str(tmp_path / "store"),
                 "--data-dir", str(DATA_DIR), "--interval", "5", "--log-format", "text",
                 "--health-port", str(self.health_port), *flags],
                env=env, stdout=out, stderr=subprocess.STDOUT)

    def logs(self) -> str:
        return self.log.read_text()[-4000:]

    async def http(self, path: str) -> tuple[int, str]:
        return await asyncio.get_running_loop().run_in_executor(None, http_get, self.health_port, path)

    async def exit_code(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        return self.proc.poll()

    async def until_healthy(self, cluster: Api, name: str) -> None:
        try:
            await eventually(healthy(cluster, name), 90, "a Healthy status from the CLI")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; log:\n{self.logs()}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def healthy(cluster: Api, name: str) -> Any:
    return lambda: ((cluster.get(name) or {}).get("status") or {}).get("phase") == "Healthy"


@on_kmock
async def test_the_cli_operator_logs_in_from_the_kubeconfig_and_reconciles(cluster: Api, tmp_path: Path) -> None:
    op = CliOperator(cluster, tmp_path)
    try:
        await cluster.create(example("quickstart-v1.yaml"))
        await op.until_healthy(cluster, "quickstart")
        assert cluster.configmap("quickstart")["data"]["stable"] == "v1"
        assert await op.http("/readyz") == (200, "ready\n")
        assert "no credentials were retrieved" not in op.logs()
    finally:
        op.kill()


@on_kmock
async def test_sigterm_stops_the_cli_operator_and_releases_the_lease(cluster: Api, tmp_path: Path) -> None:
    op = CliOperator(cluster, tmp_path, "--leader-elect", "--lease-name", "eic")
    try:
        await cluster.create(example("quickstart-v1.yaml"))
        await op.until_healthy(cluster, "quickstart")
        assert cluster.emulator.body("leases", NAMESPACE, "eic")["spec"]["holderIdentity"] == "pod-cli"
        op.proc.send_signal(signal.SIGTERM)
        code = await op.exit_code(10)
        assert code == 0, f"exit {code} (None: still running 10 s after SIGTERM); log:\n{op.logs()}"
        assert not cluster.emulator.body("leases", NAMESPACE, "eic")["spec"].get("holderIdentity")
    finally:
        op.kill()


@on_kmock
async def test_with_every_token_refused_the_operator_exits_naming_the_credentials(cluster: Api,
                                                                                  tmp_path: Path) -> None:
    # kopf re-authenticates on a 401 and gives up once the fresh login is refused too. Before, nothing could
    # stop the process then: it idled with /healthz and /readyz at 200. Now it exits (the pod restarts and
    # its log says why); /readyz answers 503 in between (test_readyz_needs_api_credentials_...).
    cluster.emulator.fail(None, r".", 401, times=10**6)  # a revoked or wrong token: every request is refused
    op = CliOperator(cluster, tmp_path)
    try:
        code = await op.exit_code(60)
        assert code == 1, f"exit {code}; log:\n{op.logs()}"
        assert "refused every credential" in op.logs()
    finally:
        op.kill()


def test_readyz_needs_api_credentials_as_well_as_a_started_kopf(tmp_path: Path) -> None:
    rt = Runtime(OperatorConfig(store_root=tmp_path, data_dir=DATA_DIR))
    rt.ready.set()
    credentials = {"present": False}
    server = serve_http(0, health_routes(rt, lambda: True, lambda: credentials["present"]), host="127.0.0.1")
    port = server.server_address[1]
    try:
        code, text = http_get(port, "/readyz")
        assert code == 503 and "credentials" in text
        assert http_get(port, "/healthz")[0] == 200
        credentials["present"] = True
        assert http_get(port, "/readyz") == (200, "ready\n")
    finally:
        server.shutdown()


@pytest.mark.parametrize("flags,named", [
    (["--interval", "0"], "--interval"),
    (["--interval", "-5"], "--interval"),
    (["--interval", "nan"], "--interval"),
    (["--health-port", "70000"], "--health-port"),
    (["--metrics-port", "-1"], "--metrics-port"),
    (["--lease-duration", "0", "--renew-deadline", "-1"], "--lease-duration"),
    (["--renew-deadline", "0"], "--renew-deadline"),
])
def test_out_of_range_flags_exit_2_naming_the_flag(flags: list[str], named: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # No API to reach: a flag the checks let through fails later with exit 1 (or a traceback), not 2.
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    code = cli(["operator", "--store", str(tmp_path), "--data-dir", str(tmp_path), *flags])
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err and "Traceback" not in err
