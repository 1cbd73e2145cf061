"""A reader that leaves early never changes the exit code; `--store ""` is refused; `--out`, `--html` and `--md`
are checked before any work and never replace a FIFO, a device or a symlink; reports are written atomically.

The pipe tests run the real console entry (`python -m controller.cli.main`) with stdout a pipe whose reader
has gone, because that is where the exit code used to be lost: in the verb (EPIPE mid-output) or in the final
flush of buffered output at exit.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from controller.errors import InvalidInput
from tests.cli.conftest import npy
from tests.helpers import QUICKSTART, REPO

CLI = [sys.executable, "-m", "controller.cli.main"]


@pytest.fixture(scope="module")
def quickstart_v1(tmp_path_factory) -> Path:
    """A store after the README quickstart's first step: `controller reconcile v1.yaml` (Healthy)."""
    store = tmp_path_factory.mktemp("qs") / "store"
    assert main(["reconcile", str(QUICKSTART / "v1.yaml"), "--store", str(store)]) == 0
    return store


@pytest.fixture(scope="module")
def quickstart_v3(quickstart_v1, tmp_path_factory) -> Path:
    """That store after `controller reconcile v3.yaml`: v3 failed its gates and was rolled back (exit 3)."""
    store = tmp_path_factory.mktemp("qs3") / "store"
    shutil.copytree(quickstart_v1, store)
    assert main(["reconcile", str(QUICKSTART / "v3.yaml"), "--store", str(store)]) == 3
    return store


def copy_of(store: Path, tmp_path: Path, name: str) -> Path:
    shutil.copytree(store, tmp_path / name)
    return tmp_path / name


def run_reader_gone(args: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of the CLI whose stdout reader closed the pipe before the first byte."""
    proc = subprocess.Popen(CLI + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    proc.stdout.close()
    proc.stdout = None  # communicate() reads stderr only
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err


def run_read_all(args: list[str]) -> tuple[int, str]:
    proc = subprocess.run(CLI + args, capture_output=True, text=True, cwd=REPO, timeout=300)
    return proc.returncode, proc.stderr


def run_piped_to_head(args: list[str]) -> tuple[int, str, str]:
    """(exit code of the CLI, what `head -1` printed, stderr) of `controller ARGS | head -1`."""
    line = " ".join(f"'{a}'" for a in CLI + args) + ' | head -1; exit "${PIPESTATUS[0]}"'
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=REPO, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


# --- 1. a closed stdout keeps the verb's exit code -------------------------------------------------------------


@pytest.mark.parametrize("output", ["text", "json"])
def test_rolled_back_reconcile_exits_3_whether_or_not_the_reader_stayed(quickstart_v1, tmp_path, output):
    v3 = ["reconcile", str(QUICKSTART / "v3.yaml"), "-o", output]
    gone_code, gone_err = run_reader_gone(v3 + ["--store", str(copy_of(quickstart_v1, tmp_path, "a"))])
    read_code, _ = run_read_all(v3 + ["--store", str(copy_of(quickstart_v1, tmp_path, "b"))])
    assert (gone_code, read_code) == (3, 3), gone_err
    assert "Traceback" not in gone_err and "BrokenPipe" not in gone_err, gone_err
    assert "v3 failed its gates and was rolled back" in gone_err  # stderr still speaks


def test_rolled_back_reconcile_json_piped_to_head_exits_3(quickstart_v1, tmp_path):
    store = copy_of(quickstart_v1, tmp_path, "s")
    code, head, err = run_piped_to_head(["reconcile", str(QUICKSTART / "v3.yaml"), "-o", "json", "--store", str(store)])
    assert code == 3 and head == "{\n", err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_drift_found_exits_3_with_the_reader_gone(quickstart_v1, tmp_path):
    rng = np.random.default_rng(0)
    ref = npy(tmp_path / "ref.npy", rng.normal(size=(200, 384)))
    shifted = npy(tmp_path / "shifted.npy", rng.normal(size=(200, 384)) + 3.0)
    args = ["drift", "quickstart", "--reference", str(ref), "--queries", str(shifted), "--metrics", "cosineShift",
            "--store", str(quickstart_v1)]
    (gone_code, err), (read_code, _) = run_reader_gone(args), run_read_all(args)
    assert (gone_code, read_code) == (3, 3), err
    assert "Traceback" not in err, err


def test_wait_timeout_exits_1_with_the_reader_gone(quickstart_v1):
    args = ["wait", "quickstart", "--for=phase=RolledBack", "--timeout", "1s", "--interval", "100ms", "-o", "json",
            "--store", str(quickstart_v1)]
    (gone_code, err), (read_code, _) = run_reader_gone(args), run_read_all(args)
    assert (gone_code, read_code) == (1, 1), err
    assert "Traceback" not in err, err


def test_sync_loop_keeps_running_with_the_reader_gone(tmp_path):
    """`controller sync ... | head -1` used to end the loop (exit 0) at its first line."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(QUICKSTART / "data", repo / "data")
    shutil.copy(QUICKSTART / "v1.yaml", repo / "v1.yaml")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    for step in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "v1"]):
        subprocess.run(git + step, check=True, capture_output=True)
    store = tmp_path / "store"
    proc = subprocess.Popen(CLI + ["sync", "--repo", str(repo), "--branch", "main", "--interval", "200ms",
                                   "--heartbeat", "200ms", "--store", str(store)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    proc.stdout.close()
    proc.stdout = None
    try:
        journal = store / "indexes" / "quickstart" / "history.jsonl"
        deadline = time.monotonic() + 120
        while not journal.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert journal.exists(), "the first pass did not apply v1"
        time.sleep(2)  # several more passes, each printing (heartbeat 200ms) to the closed pipe
        assert proc.poll() is None, f"sync stopped with exit {proc.returncode}"
    finally:
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            # seen once in CI (1 of 3 clean runs): the loop outlived SIGTERM by over a minute. Not what this test
            # checks (the loop running on with its reader gone, asserted above), and left open in the stop's note
            proc.kill()
            _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err


def test_in_process_capture_is_left_alone(quickstart_v1, capsys):
    """pytest's capsys (no file descriptor) is not wrapped, still captures, and is sys.stdout afterwards."""
    before = sys.stdout
    assert main(["get", "--store", str(quickstart_v1)]) == 0
    assert sys.stdout is before
    assert "\nquickstart   Healthy" in capsys.readouterr().out


def test_pipe_safe_stream_discards_after_the_reader_left():
    from controller.cli.main import _PipeSafeStream

    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = open(write_end, "w", encoding="utf-8", closefd=True)
    try:
        safe = _PipeSafeStream(stream)
        safe.write("x" * 100_000)  # more than the buffer: the write itself meets EPIPE
        safe.flush()
        safe.write("more\n")
        safe.flush()
        assert os.path.samestat(os.fstat(write_end), os.stat(os.devnull))
    finally:
        stream.close()


# --- 2. --store "" -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [["get"], ["status"], ["apply", "plan.json"]])
def test_an_empty_store_flag_is_refused_not_the_environment_store(quickstart_v1, monkeypatch, capsys, verb):
    monkeypatch.setenv("CONTROLLER_STORE", str(quickstart_v1))
    assert main([*verb, "--store", ""]) == 2
    captured = capsys.readouterr()
    assert "quickstart" not in captured.out
    assert captured.err.startswith("error: field --store: ") and "(got '')" in captured.err, captured.err


def test_an_empty_store_flag_with_detailed_exitcode_is_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONTROLLER_STORE", str(tmp_path / "env-store"))
    assert main(["reconcile", str(QUICKSTART / "v1.yaml"), "--dry-run", "--detailed-exitcode", "--store", ""]) == 1
    assert "field --store" in capsys.readouterr().err


def test_store_path_refuses_an_empty_name():
    from controller.paths import store_path

    with pytest.raises(InvalidInput, match="--store"):
        store_path("")


# --- 3. --out never replaces what is not a regular file -----------------------------------------------------------


def _dry_run_out(store: Path, out: Path, *extra: str) -> int:
    return main(["reconcile", str(QUICKSTART / "v1.yaml"), "--dry-run", "--out", str(out), "--store", str(store),
                 *extra])


def test_out_refuses_a_fifo_and_leaves_it(quickstart_v1, tmp_path, capsys):
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    assert _dry_run_out(quickstart_v1, fifo) == 2
    err = capsys.readouterr().err
    assert "field --out" in err and "FIFO" in err and "-o json" in err and str(fifo) in err, err
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.parametrize("dangling", [False, True])
def test_out_refuses_a_symlink_and_leaves_it(quickstart_v1, tmp_path, capsys, dangling):
    target = tmp_path / "target.json"
    if not dangling:
        target.write_text("keep me")
    link = tmp_path / "plan.json"
    link.symlink_to(target)
    assert _dry_run_out(quickstart_v1, link) == 2
    assert "symbolic link" in capsys.readouterr().err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.exists() != dangling and (dangling or target.read_text() == "keep me")


def test_out_refusal_with_detailed_exitcode_is_1(quickstart_v1, tmp_path):
    fifo = tmp_path / "plan.fifo"
    os.mkfifo(fifo)
    assert _dry_run_out(quickstart_v1, fifo, "--detailed-exitcode") == 1
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_out_still_replaces_a_regular_file(quickstart_v1, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text("old")
    assert _dry_run_out(quickstart_v1, plan) == 0
    assert plan.read_text().startswith("{")


# --- 4. report destinations: checked before any work, written atomically -------------------------------------------


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if the report gathers anything (the work the checks must come before)."""
    import controller.report

    def gather(*args, **kwargs):
        raise AssertionError("the report did its work before refusing a destination")

    monkeypatch.setattr(controller.report, "gather", gather)


def test_report_bad_md_writes_no_html(quickstart_v3, tmp_path, capsys, no_work):
    html = tmp_path / "ok.html"
    code = main(["report", "quickstart", "--html", str(html), "--md", str(tmp_path / "missing" / "r.md"),
                 "--store", str(quickstart_v3)])
    err = capsys.readouterr().err
    assert code == 2 and "field --md" in err and "does not exist" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--html", "--md"])
def test_report_directory_destination_is_refused_before_work(quickstart_v3, tmp_path, capsys, no_work, flag):
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["report", "quickstart", flag, str(folder), "--store", str(quickstart_v3)]) == 2
    err = capsys.readouterr().err
    assert f"field {flag}" in err and "is a directory" in err, err
    assert list(folder.iterdir()) == []


def test_report_refuses_a_fifo_and_a_missing_directory(quickstart_v3, tmp_path, capsys, no_work):
    fifo = tmp_path / "r.html"
    os.mkfifo(fifo)
    assert main(["report", "quickstart", "--html", str(fifo), "--store", str(quickstart_v3)]) == 2
    assert "FIFO" in capsys.readouterr().err and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert main(["report", "quickstart", "--html", str(tmp_path / "new" / "r.html"),
                 "--store", str(quickstart_v3)]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_report_same_file_twice_is_refused(quickstart_v3, tmp_path, capsys, no_work):
    same = str(tmp_path / "r.out")
    assert main(["report", "quickstart", "--html", same, "--md", same, "--store", str(quickstart_v3)]) == 2
    assert "separate destinations" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_report_failed_write_leaves_no_partial_file(quickstart_v3, tmp_path, capsys, monkeypatch):
    """A full disk while the HTML is renamed into place: exit 1 naming the file, nothing left behind."""
    import errno

    from controller.store import atomic

    html = tmp_path / "r.html"

    def full_disk(op: str, path: Path) -> None:
        if path == html:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(atomic, "write_hook", full_disk)
    assert main(["report", "quickstart", "--html", str(html), "--store", str(quickstart_v3)]) == 1
    err = capsys.readouterr().err
    assert f"{html}: No space left on device" in err, err
    assert list(tmp_path.iterdir()) == [], "no report and no temporary file"


def test_report_writes_html_and_md(quickstart_v3, tmp_path, capsys):
    html, md = tmp_path / "r.html", tmp_path / "r.md"
    assert main(["report", "quickstart", "--html", str(html), "--md", str(md), "--store", str(quickstart_v3)]) == 0
    assert html.read_text().startswith("<!DOCTYPE html>") and md.read_text().startswith("# Drift report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html", "r.md", "r_files"]
