"""A trained index keeps its raw rows inside vectors.npy's bytes and writes them with direct I/O
(``_vectors_image`` in backends/faiss.py, ``atomic.write_image``): the file is np.save's, bit for bit,
on a file system with direct I/O or without, and a write error names the file."""

from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from controller import api
from controller.backends import faiss as faiss_backend
from controller.engine import ahead
from controller.store import atomic


def _saved(rows: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, rows, allow_pickle=False)
    return out.getvalue()


def _image_of(rows: np.ndarray) -> atomic.Image:
    header = faiss_backend.npy_header(*rows.shape)
    image = atomic.new_image(len(header) + rows.nbytes)
    image.memory[:len(header)] = header
    np.frombuffer(image.memory, np.float32, rows.size, len(header))[:] = rows.ravel()
    return image


@pytest.mark.parametrize("n, dim", [(0, 3), (1, 3), (5, 7), (1000, 384), (4097, 1)])
def test_npy_header_is_np_saves_own(n: int, dim: int) -> None:
    assert faiss_backend.npy_file_ready()
    rows = np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32)
    assert faiss_backend.npy_header(n, dim) + rows.tobytes() == _saved(rows)


@pytest.mark.parametrize("direct", [True, False])
def test_an_image_is_written_as_np_save_writes_the_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        direct: bool) -> None:
    if not direct:  # a file system without direct I/O (tmpfs on older kernels)
        monkeypatch.setattr(atomic, "_open_direct", lambda path: None)
    rows = np.random.default_rng(1).standard_normal((3001, 13)).astype(np.float32)
    atomic.write_image(tmp_path / "v.npy", _image_of(rows))
    assert (tmp_path / "v.npy").read_bytes() == _saved(rows)


def test_a_refused_first_direct_write_falls_back_to_a_plain_one(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data: object, offset: int) -> int:
        if not refused:  # the direct path's first write; the plain one writes through a file object
            refused.append(offset)
            raise OSError(errno.EINVAL, "Invalid argument")  # what an unaligned direct write gets
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    rows = np.ones((100, 4), np.float32)
    atomic.write_image(tmp_path / "v.npy", _image_of(rows))
    assert refused == [0]
    assert (tmp_path / "v.npy").read_bytes() == _saved(rows)


def test_a_failing_direct_write_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = os.pwrite

    def pwrite(fd: int, data: object, offset: int) -> int:
        calls.append(offset)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(atomic, "DIRECT_STEP", atomic.DIRECT_BLOCK)
    monkeypatch.setattr(os, "pwrite", pwrite)
    with pytest.raises(OSError) as caught:
        atomic.write_image(tmp_path / "v.npy", _image_of(np.ones((5000, 4), np.float32)))
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(tmp_path / "v.npy")


def _workspace(tmp_path: Path, *, unit: bool) -> Path:
    x = np.random.default_rng(3).standard_normal((400, 8)).astype(np.float32)
    if unit:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.save(tmp_path / "vectors.npy", x)
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "text": f"t {i}"}) + "\n"
                                                   for i in range(400)))
    manifest = tmp_path / "index.yaml"
    manifest.write_text(json.dumps({
        "apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "vi"},
        "spec": {"corpus": {"path": "corpus.jsonl", "idField": "id", "textFields": ["text"]},
                 "model": {"provider": "precomputed", "name": "m", "version": "1", "dim": 8,
                           "options": {"vectors": "vectors.npy"}},
                 "index": {"version": "v1", "factory": "IVF4,Flat", "metric": "cosine"},
                 "rollout": {"percentage": 100}}}))
    return manifest


def _files(store: Path) -> dict[str, bytes]:
    vdir = store / "indexes" / "vi" / "versions" / "v1"
    return {f.name: f.read_bytes() for f in sorted(vdir.iterdir()) if f.name not in ("meta.json", "verdict.json")}


@pytest.mark.parametrize("unit", [True, False])
@pytest.mark.parametrize("built_ahead", [True, False])
def test_a_trained_index_writes_its_image_and_the_files_are_the_old_paths_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unit: bool, built_ahead: bool) -> None:
    manifest = _workspace(tmp_path, unit=unit)
    if not built_ahead:
        monkeypatch.setattr(ahead, "start", lambda *args, **kwargs: None)
    images: list[Path] = []
    real = atomic.write_image
    monkeypatch.setattr(atomic, "write_image", lambda path, image: images.append(path) or real(path, image))
    assert api.reconcile(manifest, tmp_path / "image")[0].built == 1
    assert [p.name for p in images] == ["vectors.npy"]
    monkeypatch.setattr(faiss_backend, "npy_file_ready", lambda: False)  # rows in an array, np.save writes them
    assert api.reconcile(manifest, tmp_path / "saved")[0].built == 1
    assert len(images) == 1
    assert _files(tmp_path / "image") == _files(tmp_path / "saved")
    kept = np.load(tmp_path / "image" / "indexes" / "vi" / "versions" / "v1" / "vectors.npy")
    given = np.load(tmp_path / "vectors.npy")
    if unit:
        assert np.array_equal(kept, given)  # the rows, as given
    else:  # the embedder's rows: normalised (options.normalize defaults to true for cosine)
        assert np.allclose(kept, given / np.linalg.norm(given, axis=1, keepdims=True), atol=1e-6)


def test_fewer_rows_than_reserved_are_written_from_the_rows(tmp_path: Path) -> None:
    from controller.backends.base import VersionRef

    location = tmp_path / "staging"
    ref = VersionRef(index="vi", version="v1", dim=4, metric="l2", fingerprint="f", location=location)
    writer = faiss_backend.FaissWriter(ref, "IVF2,Flat")
    writer.reserve(10)
    rows = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    writer.add(rows)
    writer.finish()
    assert (location / "vectors.npy").read_bytes() == _saved(rows)
