"""The CLI's conventions: help, completion, lazy start-up, quiet pipes, crd/schema outputs, loop output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controller.cli.main import VERBS, main

REPO = Path(__file__).resolve().parents[2]


def test_bare_controller_prints_help_and_exits_0(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert "usage: controller" in out and all(v in out for v in VERBS)


@pytest.mark.parametrize("verb", list(VERBS))
def test_every_verb_help_has_examples(verb, capsys):
    assert main([verb, "--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"controller {verb}" in out.split("examples:")[1]


def test_diff_help_states_its_exit_codes(capsys):
    main(["diff", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ("with --detailed-exitcode 0 no changes, 1 error (invalid manifests and blocked plans included), "
            "2 changes pending") in text
    assert "without --detailed-exitcode 0 (changes or not)" in text
    assert "3 a blocked plan" in text


def test_unknown_verb_is_a_usage_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def _modules_loaded_by(argv: list[str], env: dict[str, str]) -> set[str]:
    code = ("import sys, io, contextlib\n"
            "from controller.cli.main import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    try:\n"
            f"        main({argv!r})\n"
            "    except SystemExit:\n"
            "        pass\n"
            "print(' '.join(sorted(m for m in ('numpy', 'faiss', 'scipy', 'pydantic', 'yaml', 'controller.engine',"
            " 'fastapi', 'uvicorn', 'kopf', 'kubernetes') if m in sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    return set(proc.stdout.split())


@pytest.mark.parametrize("argv", [["--version"], ["get"], ["status"], ["--help"], []])
def test_fast_verbs_import_no_heavy_module(argv, built):
    """Start-up stays fast because these never import numpy, faiss, scipy, pydantic or the engine
    (bench/bench_cli.py measures the time; a test only checks what is imported)."""
    _, store = built
    env = {**os.environ, "CONTROLLER_STORE": str(store)}
    assert _modules_loaded_by(argv, env) == set()


@pytest.mark.parametrize("verb", ["sync", "watch", "diff", "operator", "serve"])
def test_verbs_living_in_other_shells_load_light(verb):
    """`controller VERB --help` for a verb kept in gitops/, operator/ or serve/ (found by name in the
    verb table) loads neither the engine nor FastAPI, kopf or the Kubernetes client."""
    assert _modules_loaded_by([verb, "--help"], dict(os.environ)) == set()


def test_import_controller_is_lazy_and_the_api_resolves():
    code = ("import sys, controller\n"
            "assert 'controller.api' not in sys.modules and 'numpy' not in sys.modules\n"
            "missing = [n for n in controller.__all__ if getattr(controller, n, None) is None]\n"
            "print(missing)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr


def test_status_piped_to_head_ends_quietly(built):
    _, store = built
    env = {**os.environ, "CONTROLLER_STORE": str(store)}
    # schema is long enough to fill the pipe after `head` has gone
    proc = subprocess.run(f"{sys.executable} -m controller.cli.main schema | head -1; "
                          f"{sys.executable} -m controller.cli.main status | head -1",
                          shell=True, capture_output=True, text=True, env=env, cwd=REPO)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines() == ["{", "qs  phase Healthy"]


def test_crd_prints_yaml_or_json_and_writes_only_with_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["crd", "-o", "yaml"]) == 0
    as_yaml = yaml.safe_load(capsys.readouterr().out)
    assert main(["crd", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == as_yaml and as_yaml["kind"] == "CustomResourceDefinition"
    assert list(tmp_path.iterdir()) == []  # `-o yaml` no longer writes a file named "yaml"
    assert main(["crd", "--file", "out/crd.yaml"]) == 0
    assert yaml.safe_load((tmp_path / "out" / "crd.yaml").read_text()) == as_yaml


def test_crd_is_rendered_from_the_manifest_package_and_committed_copies_match():
    from controller.manifest.crd import render_yaml

    for copy in (REPO / "charts/embedding-index-controller/crds/embeddingindexes.indexops.dev.yaml",):
        assert copy.read_text() == render_yaml()


def test_schema_format_flag_still_works(capsys):
    assert main(["schema", "--format", "markdown"]) == 0
    assert capsys.readouterr().out.startswith("| field | default | meaning |")


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_scripts_parse_and_cover_every_verb(shell, tmp_path, capsys):
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert all(v in script for v in VERBS) and "--for" in script and "--detailed-exitcode" in script
    exe = shutil.which(shell)
    if exe is None:
        pytest.skip(f"{shell} is not installed")
    path = tmp_path / f"c.{shell}"
    path.write_text(script)
    proc = subprocess.run([exe, "-n", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_bash_completion_completes_verbs_and_choices(tmp_path, capsys):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not installed")
    main(["completion", "bash"])
    (tmp_path / "c.bash").write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        line = " ".join(["controller", *words])
        cmd = (f"source {tmp_path / 'c.bash'}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
               "_controller; echo ${COMPREPLY[@]}")
        return subprocess.run([bash, "-c", cmd], capture_output=True, text=True).stdout.split()

    assert "wait" in complete("wa") and "watch" in complete("wa")
    assert complete("get", "-o", "y") == ["yaml"]
    assert "--for" in complete("wait", "--f")


def test_calibrate_default_splits_match_the_checks():
    from controller.checks.drift import DEFAULT_SPLITS
    from controller.cli import calibrate_cmd

    assert calibrate_cmd.DEFAULT_SPLITS == DEFAULT_SPLITS


def test_no_provider_name_checks_outside_the_registry():
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "controller").rglob("*.py")
                 if '== "precomputed"' in p.read_text() or "== 'precomputed'" in p.read_text()]
    assert offenders == []
