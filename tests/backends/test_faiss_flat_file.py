"""A new Flat index's file is written as its rows come (FlatFile in backends/faiss.py), not from a full index in
memory: the bytes are FAISS's own, bit for bit; a build ahead of validation writes into a file with no
name that appears in the store only once it is linked into the staging directory, and is freed when
validation fails; where such a file cannot be made or linked, the same bytes come another way."""

from __future__ import annotations

import errno
import json
import os
import threading
from pathlib import Path

import faiss
import numpy as np
import pytest

from controller import api
from controller.backends import faiss as faiss_backend
from controller.engine import ahead
from controller.errors import InvalidInput
from controller.store import atomic

N, DIM = 700, 16


def _workspace(tmp_path: Path, *, metric: str = "cosine", unit: bool = False, bad_line: bool = False) -> Path:
    x = (np.random.default_rng(3).standard_normal((N, DIM)) * 2).astype(np.float32)
    if unit:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[11] = 0.0
    np.save(tmp_path / "vectors.npy", x)
    lines = [json.dumps({"id": f"d{i}", "text": f"t {i}"}) for i in range(N)]
    if bad_line:
        lines[600] = '{"id": "d600", "text": '
    (tmp_path / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    spec = {"corpus": {"path": "corpus.jsonl", "idField": "id", "textFields": ["text"]},
            "model": {"provider": "precomputed", "name": "m", "version": "1", "dim": DIM,
                      "normalize": metric == "cosine", "options": {"vectors": "vectors.npy"}},
            "index": {"version": "v1", "factory": "Flat", "metric": metric},
            "rollout": {"percentage": 100}}
    manifest = tmp_path / "index.yaml"
    manifest.write_text(json.dumps({"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex",
                                    "metadata": {"name": "ff"}, "spec": spec}))
    return manifest


def _files(store: Path) -> dict[str, bytes]:
    vdir = store / "indexes" / "ff" / "versions" / "v1"
    return {f.name: f.read_bytes() for f in sorted(vdir.iterdir())
            if f.is_file() and f.name not in ("meta.json", "verdict.json")}


def _build_ahead_threads() -> None:
    for thread in threading.enumerate():
        if thread.name == "build-ahead":
            thread.join(10)


def test_the_header_is_the_one_this_faiss_writes() -> None:
    assert faiss_backend.flat_file_ready(), "this FAISS writes Flat differently: builds take FAISS's own path"
    rows = np.random.default_rng(0).standard_normal((9, 384)).astype(np.float32)
    for metric in (faiss.METRIC_INNER_PRODUCT, faiss.METRIC_L2):
        index = faiss.IndexFlat(384, metric)
        index.add(rows)
        assert faiss_backend.flat_header(384, 9, metric) + rows.tobytes() == faiss.serialize_index(index).tobytes()


@pytest.mark.parametrize("metric, unit", [("cosine", False), ("cosine", True), ("ip", False), ("l2", False)])
@pytest.mark.parametrize("built_ahead", [True, False])
def test_a_streamed_flat_file_is_faiss_own_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  metric: str, unit: bool, built_ahead: bool) -> None:
    manifest = _workspace(tmp_path, metric=metric, unit=unit)
    monkeypatch.setattr(faiss_backend, "ADD_CHUNK", 64)  # many appends
    monkeypatch.setattr(ahead, "ADD_CHUNK", 100)
    if not built_ahead:
        monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    streamed: list[object] = []
    real_append = faiss_backend.FlatFile.append
    monkeypatch.setattr(faiss_backend.FlatFile, "append", lambda self, rows: streamed.append(self.anonymous)
                        or real_append(self, rows))
    assert api.reconcile(manifest, tmp_path / "streamed")[0].built == 1
    assert streamed and set(streamed) == {built_ahead}  # streamed, into a file with no name when ahead
    monkeypatch.setattr(faiss_backend, "flat_file_ready", lambda: False)  # FAISS's own write_index
    assert api.reconcile(manifest, tmp_path / "faiss")[0].built == 1
    assert _files(tmp_path / "streamed") == _files(tmp_path / "faiss")
    index = faiss.read_index(str(tmp_path / "streamed" / "indexes" / "ff" / "versions" / "v1" / "index.faiss"))
    assert index.ntotal == N


def _nameless_open() -> list[str]:
    """This process's descriptors of files with no name (O_TMPFILE shows as "/dir/#123 (deleted)")."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if "/#" in target and target.endswith("(deleted)"):
            found.append(target)
    return found


def test_a_validation_error_frees_the_nameless_file_and_writes_nothing(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _workspace(tmp_path, bad_line=True)
    made: list[int] = []
    real_open = atomic.open_anonymous
    monkeypatch.setattr(atomic, "open_anonymous", lambda d: made.append(1) or real_open(d))
    before, held = sorted(os.listdir(tmp_path)), _nameless_open()  # (pytest's capture holds some)
    with pytest.raises(InvalidInput, match="line 601 is not valid JSON"):
        api.reconcile(manifest, tmp_path / "store")
    _build_ahead_threads()
    assert made  # the build ahead had begun its file
    assert sorted(os.listdir(tmp_path)) == before  # no store, no file with a name
    assert _nameless_open() == held  # and its space is given back


def test_a_build_ahead_that_cannot_link_copies_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _workspace(tmp_path)
    monkeypatch.setattr(atomic, "_linkat_fd", lambda fd, path: errno.EXDEV)  # e.g. another mount
    assert api.reconcile(manifest, tmp_path / "copied")[0].built == 1
    monkeypatch.setattr(faiss_backend, "flat_file_ready", lambda: False)
    assert api.reconcile(manifest, tmp_path / "faiss")[0].built == 1
    assert _files(tmp_path / "copied") == _files(tmp_path / "faiss")
    index_file = tmp_path / "copied" / "indexes" / "ff" / "versions" / "v1" / "index.faiss"
    assert oct(index_file.stat().st_mode & 0o777) == oct(atomic.file_mode())


def test_a_link_error_that_is_not_about_the_file_system_is_raised(tmp_path: Path) -> None:
    fd = atomic.open_anonymous(tmp_path)
    assert fd is not None
    try:
        os.write(fd, b"abc")
        (tmp_path / "taken").write_bytes(b"old")
        with pytest.raises(FileExistsError):
            atomic.link_anonymous(fd, tmp_path / "taken")
        assert (tmp_path / "taken").read_bytes() == b"old"  # never overwritten by a copy
        atomic.link_anonymous(fd, tmp_path / "new")
        assert (tmp_path / "new").read_bytes() == b"abc"
    finally:
        os.close(fd)


def test_without_nameless_files_a_build_ahead_holds_the_index_in_memory(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = _workspace(tmp_path)
    monkeypatch.setattr(atomic, "open_anonymous", lambda directory: None)  # no O_TMPFILE here
    assert api.reconcile(manifest, tmp_path / "memory")[0].built == 1
    monkeypatch.setattr(faiss_backend, "flat_file_ready", lambda: False)
    assert api.reconcile(manifest, tmp_path / "faiss")[0].built == 1
    assert _files(tmp_path / "memory") == _files(tmp_path / "faiss")
