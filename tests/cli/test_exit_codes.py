"""One test per row of the README's exit-code table (the table is parsed and checked against this file)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from controller.cli.main import main
from tests.cli.conftest import npy
from tests.helpers import BAD_OPTIONS, V2_OPTIONS, manifest, workspace, write_manifest

README = Path(__file__).resolve().parents[2] / "README.md"

#: README row (mode, code) -> the tests in this module that prove it
ROWS = {
    ("default", 0): ["test_0_ok", "test_0_no_changes"],
    ("default", 1): ["test_1_error_unknown_index", "test_1_error_wait_timeout", "test_1_error_full_store_volume"],
    ("default", 2): ["test_2_invalid_manifest", "test_2_detailed_exitcode_without_dry_run"],
    ("default", 3): ["test_3_candidate_rolled_back", "test_3_index_version_immutable_is_stalled",
                     "test_3_drift_detected"],
    ("detailed", 0): ["test_detailed_0_no_changes"],
    ("detailed", 1): ["test_detailed_1_invalid_input", "test_detailed_1_blocked_plan"],
    ("detailed", 2): ["test_detailed_2_changes_pending"],
}


def test_readme_table_has_exactly_these_rows():
    text = README.read_text()
    table = text.split("<!-- exit-codes:begin -->")[1].split("<!-- exit-codes:end -->")[0]
    rows = set()
    for line in table.splitlines():
        m = re.match(r"^\|\s*(without|with)[^|]*\|\s*`(\d)`\s*\|", line)
        if m:
            rows.add(("default" if m.group(1) == "without" else "detailed", int(m.group(2))))
    assert rows == set(ROWS)
    names = set(globals())
    assert all(t in names for tests in ROWS.values() for t in tests)


@pytest.fixture
def ws(tmp_path):
    return workspace(tmp_path, n_docs=60)


def reconcile(path: Path, store: Path, *extra: str) -> int:
    return main(["reconcile", str(path), "--store", str(store), *extra])


def test_0_ok(ws, tmp_path, capsys):
    assert reconcile(write_manifest(ws, manifest("v1")), tmp_path / "s") == 0
    assert f"store: {tmp_path / 's'}" in capsys.readouterr().out


def test_0_no_changes(built):
    ws, store = built
    assert reconcile(ws / "v1.yaml", store) == 0


def test_1_error_unknown_index(tmp_path, capsys):
    assert main(["status", "nope", "--store", str(tmp_path)]) == 1
    assert "no index named 'nope'" in capsys.readouterr().err


def test_1_error_full_store_volume(ws, tmp_path, capsys, monkeypatch):
    """The system refusing a write (ENOSPC) is an error naming the file, not a traceback; no version is left."""
    import errno
    import os

    from controller.backends import faiss as faiss_backend

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(faiss_backend, "_write_fully", full)  # the index file, streamed as its rows come
    assert reconcile(write_manifest(ws, manifest("v1")), tmp_path / "s") == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: \S+/index\.faiss: No space left on device\n", err), err
    versions = tmp_path / "s" / "indexes" / "idx" / "versions"
    assert not versions.exists() or not list(versions.iterdir())  # the staging directory removed


def test_1_error_write_back_failed(ws, tmp_path, capsys, monkeypatch):
    """A disk error seen while the index file is made durable as it grows (the kernel reports it once, so
    the closing fsync would not) fails the build naming the file; no version is left."""
    import errno
    import os
    import threading

    from controller.backends import faiss as faiss_backend
    from controller.store import atomic

    failed = threading.Event()

    def failing_sync(fd):
        failed.set()
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    real_write = faiss_backend._write_fully

    def write_after_the_sync(fd, data):  # rows written only once the write-back has run, whatever the timing
        failed.wait(10)
        real_write(fd, data)

    monkeypatch.setattr(atomic, "_sync_data", failing_sync)
    monkeypatch.setattr(atomic, "WRITEBACK_EVERY_S", 0.001)
    monkeypatch.setattr(faiss_backend, "_write_fully", write_after_the_sync)
    assert reconcile(write_manifest(ws, manifest("v1")), tmp_path / "s") == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: \S+/index\.faiss: Input/output error\n", err), err
    versions = tmp_path / "s" / "indexes" / "idx" / "versions"
    assert not versions.exists() or not list(versions.iterdir())


def test_1_error_wait_timeout(built, capsys):
    _, store = built
    code = main(["wait", "qs", "--for=phase=RolledBack", "--timeout", "0.3s", "--interval", "100ms",
                 "--store", str(store)])
    err = capsys.readouterr().err
    assert code == 1 and "timed out after 0.3s waiting for qs phase=RolledBack: phase Healthy" in err


def test_2_invalid_manifest(ws, tmp_path, capsys):
    assert reconcile(write_manifest(ws, manifest(pct=150)), tmp_path / "s") == 2
    assert "spec.rollout.percentage" in capsys.readouterr().err


def test_2_detailed_exitcode_without_dry_run(ws, tmp_path, capsys):
    assert reconcile(write_manifest(ws, manifest()), tmp_path / "s", "--detailed-exitcode") == 2
    assert "needs --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_3_candidate_rolled_back(built, tmp_path, capsys):
    ws, store = built
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    bad = write_manifest(ws, manifest("v3", BAD_OPTIONS, pct=50), "v3.yaml")
    assert reconcile(bad, copy) == 3
    captured = capsys.readouterr()
    assert "v3 failed its gates and was rolled back" in captured.err
    assert "phase RolledBack" in captured.out
    assert reconcile(bad, copy) == 3  # still Degraded: the manifest keeps asking for a failed version
    assert reconcile(ws / "v1.yaml", copy) == 0  # back to a healthy manifest


def test_3_index_version_immutable_is_stalled(built, tmp_path, capsys):
    """A reused index.version with another model is valid YAML but cannot be applied: phase Stalled, exit 3
    (not 2: the manifest is valid on its own; it conflicts with what the store built under that label)."""
    ws, store = built
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    reuse = write_manifest(ws, manifest("v1", V2_OPTIONS, model_version="v1"), "reuse.yaml")
    assert reconcile(reuse, copy) == 3
    assert "IndexVersionImmutable" in capsys.readouterr().err
    assert main(["reconcile", str(reuse), "--store", str(copy), "--dry-run"]) == 3


def test_3_drift_detected(built, tmp_path, capsys):
    _, store = built
    rng = np.random.default_rng(0)
    ref = npy(tmp_path / "ref.npy", rng.normal(size=(200, 384)))
    same = npy(tmp_path / "same.npy", rng.normal(size=(200, 384)))
    shifted = npy(tmp_path / "shifted.npy", rng.normal(size=(200, 384)) + 3.0)
    base = ["drift", "qs", "--reference", str(ref), "--store", str(store), "--metrics", "cosineShift"]
    assert main(base + ["--queries", str(shifted)]) == 3
    assert "DRIFT" in capsys.readouterr().out
    assert main(base + ["--queries", str(same)]) == 0


def test_detailed_0_no_changes(built):
    ws, store = built
    assert reconcile(ws / "v1.yaml", store, "--dry-run", "--detailed-exitcode") == 0


def test_detailed_1_invalid_input(ws, tmp_path, capsys):
    code = reconcile(write_manifest(ws, manifest(pct=150)), tmp_path / "s", "--dry-run", "--detailed-exitcode")
    assert code == 1 and "spec.rollout.percentage" in capsys.readouterr().err


def test_detailed_1_blocked_plan(built):
    ws, store = built
    reuse = write_manifest(ws, manifest("v1", V2_OPTIONS, model_version="v1"), "reuse.yaml")
    assert reconcile(reuse, store, "--dry-run", "--detailed-exitcode") == 1


def test_detailed_2_changes_pending(built):
    ws, store = built
    v2 = write_manifest(ws, manifest("v2", V2_OPTIONS, pct=25), "v2.yaml")
    assert reconcile(v2, store, "--dry-run", "--detailed-exitcode") == 2
