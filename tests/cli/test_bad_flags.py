"""Bad flags and damaged store files: one line naming the flag or the file, the documented exit code, no wait."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from controller.cli.main import main
from tests.helpers import BAD_OPTIONS, V2_OPTIONS, manifest, write_manifest


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e300", "400d", "0", "-5s"])
@pytest.mark.parametrize("flag", ["--interval", "--timeout"])
def test_wait_refuses_durations_that_never_end(built, capsys, flag, value):
    _, store = built
    other = "--timeout" if flag == "--interval" else "--interval"
    started = time.monotonic()
    code, _, err = run(capsys, "wait", "qs", "--for=phase=Healthy", f"{flag}={value}", other, "1s",
                       "--store", str(store))
    assert code == 2 and f"field {flag}" in err and repr(value) in err and "Traceback" not in err
    assert time.monotonic() - started < 5


def test_lock_timeout_refuses_nan(built, capsys):
    _, store = built
    code, _, err = run(capsys, "rollback", "qs", "--lock-timeout", "nan", "--store", str(store))
    assert code == 2 and "--lock-timeout" in err


@pytest.mark.parametrize("wait_for, said", [("phase=Helthy", "unknown phase 'Helthy'"),
                                            ("condition=Redy", "unknown condition 'Redy'")])
def test_wait_refuses_a_misspelt_phase_or_condition_at_once(built, capsys, wait_for, said):
    _, store = built
    code, _, err = run(capsys, "wait", "qs", f"--for={wait_for}", "--timeout", "1h", "--store", str(store))
    assert code == 2 and said in err


def test_wait_on_an_unknown_index_fails_at_once(built, capsys):
    _, store = built
    started = time.monotonic()
    code, _, err = run(capsys, "wait", "nope", "--for=condition=Ready", "--timeout", "1h", "--store", str(store))
    assert code == 1 and "no index named 'nope'" in err and time.monotonic() - started < 5


def test_a_store_that_is_a_file_is_an_error(tmp_path, capsys):
    path = tmp_path / "store"
    path.write_text("x")
    for verb in (["get"], ["status"], ["wait", "qs", "--for=condition=Ready"], ["promote", "qs"]):
        code, out, err = run(capsys, *verb, "--store", str(path))
        assert code == 1 and f"the store {path} is not a directory" in err, verb


STATUS_READERS = (["get"], ["status", "qs"], ["wait", "qs", "--for=condition=Ready"])


@pytest.mark.parametrize("file, content, said, verbs", [
    ("status.json", "", "not valid JSON", STATUS_READERS),
    ("status.json", "[1, 2]", "expected a JSON object, found list", STATUS_READERS),
    ("status.json", b"\xff\xfe", "not valid JSON", STATUS_READERS),
    ("routing.json", "{", "not valid JSON", (["rollback", "qs"], ["query", "qs", "vitamin", "--no-record"])),
])
def test_a_damaged_store_file_is_named(built, tmp_path, capsys, file, content, said, verbs):
    _, store = built
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    path = copy / "indexes" / "qs" / file
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    for verb in verbs:
        code, _, err = run(capsys, *verb, "--store", str(copy))
        assert code == 1 and f"{path}: {said}" in err and "Traceback" not in err, verb


def test_calibrate_refuses_a_negative_seed(built, capsys):
    _, store = built
    code, _, err = run(capsys, "calibrate", "qs", "--no-save", "--seed=-1", "--store", str(store))
    assert code == 2 and "field --seed" in err


@pytest.mark.parametrize("k", ["0", "-3"])
def test_query_refuses_k_below_one(built, capsys, k):
    _, store = built
    code, _, err = run(capsys, "query", "qs", "vitamin", "-k", k, "--no-record", "--store", str(store))
    assert code == 2 and f"k must be an integer from 1 to 1000, got {k}" in err


def test_crd_file_that_is_a_directory_leaves_nothing(tmp_path, capsys):
    target = tmp_path / "out"
    target.mkdir()
    code, _, err = run(capsys, "crd", "--file", str(target))
    assert code == 2 and "is a directory" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and not any(target.iterdir())


@pytest.fixture
def rolled_back(built, tmp_path) -> tuple[Path, Path]:
    """A copy of the built store after the README's path: v2 promoted, v3 failed and rolled back."""
    ws, store = built
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    assert main(["reconcile", str(write_manifest(ws, manifest("v2", V2_OPTIONS), "v2.yaml")), "--store",
                 str(copy)]) == 0
    assert main(["reconcile", str(write_manifest(ws, manifest("v3", BAD_OPTIONS), "v3.yaml")), "--store",
                 str(copy)]) == 3
    return ws, copy


def test_manual_rollback_after_a_failed_target_is_paused(rolled_back, capsys):
    _, store = rolled_back
    capsys.readouterr()
    assert main(["rollback", "qs", "--store", str(store)]) == 0
    status = json.loads((store / "indexes" / "qs" / "status.json").read_text())
    assert status["phase"] == "Paused" and status["conditions"][0]["reason"] == "ManualRollback"
    assert status["message"] == "manual rollback: alias moved from v2 to v1"


def test_rollback_usage_errors_exit_2(rolled_back, capsys):
    _, store = rolled_back
    journal = (store / "indexes" / "qs" / "history.jsonl").read_bytes()
    for argv, said in ((["--force"], "field --force"), (["--to", "../x"], "field --to"),
                       (["--to", ""], "field --to")):
        code, _, err = run(capsys, "rollback", "qs", *argv, "--store", str(store))
        assert code == 2 and said in err, argv
    assert (store / "indexes" / "qs" / "history.jsonl").read_bytes() == journal


def test_rollback_to_what_already_serves_journals_nothing(rolled_back, capsys):
    _, store = rolled_back
    history = store / "indexes" / "qs" / "history.jsonl"
    journal, status = history.read_bytes(), (store / "indexes" / "qs" / "status.json").read_bytes()
    code, out, _ = run(capsys, "rollback", "qs", "--to", "v2", "-o", "json", "--store", str(store))
    assert code == 0 and json.loads(out)["unchanged"] is True
    assert history.read_bytes() == journal
    assert (store / "indexes" / "qs" / "status.json").read_bytes() == status


def test_events_skip_lines_whose_fields_have_the_wrong_types(tmp_path, capsys):
    """Hand-edited or foreign lines are skipped like torn ones: no traceback, no NaN or Infinity."""
    good = [{"type": "impression", "ts": 1.0, "requestId": "r1", "version": "v1", "role": "stable", "ids": ["a", "b"],
             "tookMs": 2.0},
            {"type": "click", "ts": 2.0, "requestId": "r1", "version": "v1", "docId": "b", "position": 2,
             "dwellMs": None}]
    bad = [{"type": "impression", "ts": 1, "version": "v1"},  # no requestId
           {"type": "impression", "ts": 1, "requestId": "r2"},  # no version
           {"type": "impression", "ts": 1, "requestId": "r3", "version": "v1", "tookMs": None, "ids": ["a"]},
           {"type": "impression", "ts": 1, "requestId": "r4", "version": ["v1"]},
           {"type": "impression", "ts": "yesterday", "requestId": "r5", "version": "v1"},
           {"type": "click", "ts": 2, "requestId": "r1", "position": "first"},
           {"type": "click", "ts": 2, "requestId": "r1", "position": -1},
           {"type": "dwell", "ts": 2, "requestId": "r1", "dwellMs": "long"},
           {"type": "click", "ts": 2, "requestId": ["r1"]}]
    now = time.time()
    for record in good + bad:
        record["ts"] = now if isinstance(record["ts"], (int, float)) else record["ts"]
    segment = tmp_path / "events" / "qs" / "segment-x.jsonl"
    segment.parent.mkdir(parents=True)
    segment.write_text("".join(json.dumps(r) + "\n" for r in good + bad))
    for since in ((), ("--since", "1000d")):
        code, out, err = run(capsys, "events", "qs", "--events", str(tmp_path / "events"), "-o", "json", *since)
        assert code == 0 and "Traceback" not in err
        v1 = json.loads(out)["versions"]["v1"]
        # r3 is well formed (a null tookMs is how the service writes "not measured"); r1's click at rank 2
        assert (v1["queries"], v1["clicks"], v1["mrr"]) == (2, 1, 0.25)
