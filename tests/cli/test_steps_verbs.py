"""`controller promote|abort|retry`: output formats and exit codes (README table rows 0, 1, 2)."""

from __future__ import annotations

import json

import pytest

from controller.cli.main import main
from tests.helpers import V2_OPTIONS, manifest, workspace, write_manifest


@pytest.fixture
def rolling(tmp_path):
    ws = workspace(tmp_path, n_docs=60)
    store = tmp_path / "store"
    assert main(["reconcile", str(write_manifest(ws, manifest("v1"))), "--store", str(store)]) == 0
    doc = manifest("v2", V2_OPTIONS)
    doc["spec"]["rollout"] = {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}, {"pause": {}}]}
    assert main(["reconcile", str(write_manifest(ws, doc)), "--store", str(store)]) == 0
    return store


def test_promote_abort_retry_exit_codes_and_outputs(rolling, capsys):
    s = ["--store", str(rolling)]
    capsys.readouterr()
    assert main(["promote", "qs", *s, "-o", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["weight"] == 50 and status["rollout"]["currentStepIndex"] == 3
    assert main(["abort", "qs", *s]) == 0
    out = capsys.readouterr().out
    assert "RolledBack, aborted at step 4/4; weight 0%" in out
    assert main(["promote", "qs", *s]) == 2  # aborted: promote does not apply
    assert "controller retry qs" in capsys.readouterr().err
    assert main(["retry", "qs", *s, "-o", "yaml"]) == 0
    assert "currentStepIndex: 1" in capsys.readouterr().out
    assert main(["retry", "qs", *s]) == 2  # not aborted
    assert main(["promote", "qs", "--full", *s]) == 0
    assert "promoted: v2 is stable" in capsys.readouterr().out
    assert main(["get", "qs", *s, "-o", "json"]) == 0 and json.loads(capsys.readouterr().out)["step"] is None


def test_unknown_index_is_1_and_no_steps_is_2(rolling, tmp_path, capsys):
    assert main(["abort", "nope", "--store", str(rolling)]) == 1
    ws = workspace(tmp_path / "other", n_docs=60)
    plain = tmp_path / "plain"
    assert main(["reconcile", str(write_manifest(ws, manifest("v1"))), "--store", str(plain)]) == 0
    assert main(["promote", "qs", "--store", str(plain)]) == 2
    assert "no stepped rollout" in capsys.readouterr().err


def test_lock_timeout_while_another_writer_holds_the_store(rolling, capsys):
    from controller.store.fs import Store

    with Store(rolling).lock():
        assert main(["abort", "qs", "--store", str(rolling), "--lock-timeout", "0"]) == 1
    assert "lock" in capsys.readouterr().err


def test_dry_run_text_shows_the_step_it_waits_in_and_when(tmp_path, capsys):
    ws = workspace(tmp_path, n_docs=60)
    store = tmp_path / "store"
    assert main(["reconcile", str(write_manifest(ws, manifest("v1"))), "--store", str(store)]) == 0
    doc = manifest("v2", V2_OPTIONS)
    doc["spec"]["rollout"] = {"steps": [{"setMirror": 50}, {"pause": {"duration": "1h"}}, {"setWeight": 50}]}
    path = write_manifest(ws, doc)
    capsys.readouterr()
    assert main(["reconcile", str(path), "--store", str(store), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "+ build" in out and "rollout: step 2/3 (pause 1h), waiting for the pause of 1h to end, next due at" in out
    assert main(["reconcile", str(path), "--store", str(store)]) == 0
    capsys.readouterr()
    assert main(["reconcile", str(path), "--store", str(store), "--dry-run", "--detailed-exitcode"]) == 0
    assert "no changes" in capsys.readouterr().out


def test_status_text_shows_the_rollout(rolling, capsys):
    capsys.readouterr()
    assert main(["status", "qs", "--store", str(rolling)]) == 0
    out = capsys.readouterr().out
    assert "rollout    step 2/4 (pause (until promoted)); mirror 0%, interleave 0%; waiting for `controller promote`" in out
