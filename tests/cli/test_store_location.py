"""One store location for every verb: --store, then $CONTROLLER_STORE, then the per-user state directory."""

from __future__ import annotations

import json
from pathlib import Path

from controller.cli.main import main
from controller.paths import default_store_path, store_path
from tests.helpers import manifest, tree_snapshot, workspace, write_manifest


def _status(capsys) -> list:
    capsys.readouterr()
    assert main(["status", "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_reconcile_then_status_agree_from_the_manifest_dir_and_its_parent(tmp_path, monkeypatch, capsys):
    ws = workspace(tmp_path, n_docs=40)
    write_manifest(ws, manifest("v1"), "m.yaml")
    before = tree_snapshot(ws)
    monkeypatch.chdir(ws)
    assert main(["reconcile", "m.yaml"]) == 0
    assert f"store: {default_store_path()}" in capsys.readouterr().out
    here = _status(capsys)
    monkeypatch.chdir(ws.parent)
    there = _status(capsys)
    assert [s["name"] for s in here] == ["qs"] and here == there
    monkeypatch.chdir(ws.parent)
    assert main(["reconcile", "ws/m.yaml"]) == 0  # the same store from the parent: nothing to do
    assert _status(capsys) == here
    assert tree_snapshot(ws) == before, "the store must not land in the manifest directory"


def test_precedence_flag_then_env_then_default(tmp_path, monkeypatch):
    assert store_path() == default_store_path()
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert store_path() == tmp_path / "state" / "embedding-index-controller"
    monkeypatch.setenv("CONTROLLER_STORE", str(tmp_path / "env"))
    assert store_path() == tmp_path / "env"
    assert store_path(tmp_path / "flag") == tmp_path / "flag"


def test_default_without_xdg_is_under_home(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".local" / "state" / "embedding-index-controller"


def test_help_names_the_default(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "$CONTROLLER_STORE" in out and "~/.local/state/embedding-index-controller" in out
