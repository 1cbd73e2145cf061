"""StreamedRows.read_into gives what slicing gives (read with preadv where the file allows it), and
hashes the file as it reads it in order (engine/validate.py then takes that hash instead of reading
the vectors a second time)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from controller.embed.precomputed import StreamedRows
from controller.errors import EmbedError


def _rows(path: Path, normalize: bool, order: np.ndarray | None = None) -> StreamedRows:
    matrix = np.load(path, mmap_mode="r")
    return StreamedRows(matrix, np.arange(matrix.shape[0]) if order is None else order, normalize, path.name)


def _read_all(rows: StreamedRows, chunk: int) -> np.ndarray:
    out = np.empty(rows.shape, np.float32)
    for start in range(0, rows.shape[0], chunk):
        got = rows.read_into(out[start:start + chunk], start)
        assert got is not None
    return out


@pytest.mark.parametrize("dtype", ["<f4", "<f8", ">f4"])
@pytest.mark.parametrize("normalize", [True, False])
def test_read_into_gives_what_slicing_gives(tmp_path: Path, dtype: str, normalize: bool) -> None:
    x = np.random.default_rng(0).standard_normal((1000, 12)).astype(dtype)
    x[7] = 0.0  # a zero row stays zero
    np.save(tmp_path / "v.npy", x)
    rows = _rows(tmp_path / "v.npy", normalize)
    sliced = np.concatenate([rows[s:s + 64] for s in range(0, 1000, 64)])
    assert _read_all(rows, 64).tobytes() == sliced.tobytes()


def test_rows_out_of_file_order_are_read_as_slicing_reads_them(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((50, 4)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    order = np.arange(50)[::-1].copy()
    rows = _rows(tmp_path / "v.npy", False, order)
    assert np.array_equal(_read_all(rows, 8), x[order])


def test_a_nan_row_is_refused_naming_the_row(tmp_path: Path) -> None:
    x = np.ones((100, 4), np.float32)
    x[77, 2] = np.nan
    np.save(tmp_path / "v.npy", x)
    with pytest.raises(EmbedError, match=r"first at row 77"):
        _read_all(_rows(tmp_path / "v.npy", True), 16)


def test_a_file_cut_short_after_validation_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((100, 4), np.float32))
    rows = _rows(tmp_path / "v.npy", False)
    with open(tmp_path / "v.npy", "r+b") as handle:
        handle.truncate(200)
    with pytest.raises(EmbedError, match="changed after validation"):
        rows.read_into(np.empty((50, 4), np.float32), 50)


@pytest.mark.parametrize("trailing", [b"", b"extra bytes after the rows"])
def test_rows_read_once_in_order_give_the_files_sha256(tmp_path: Path, trailing: bytes) -> None:
    x = np.random.default_rng(2).standard_normal((300, 5)).astype(np.float32)
    np.save(tmp_path / "v.npy", x)
    with open(tmp_path / "v.npy", "ab") as handle:
        handle.write(trailing)
    rows = _rows(tmp_path / "v.npy", True)  # normalised in place after hashing: the hash is of the file
    rows.hash_as_read()
    _read_all(rows, 64)
    assert rows.file_digest() == hashlib.sha256((tmp_path / "v.npy").read_bytes()).hexdigest()


def test_no_digest_unless_every_row_was_read_once_in_order(tmp_path: Path) -> None:
    np.save(tmp_path / "v.npy", np.ones((100, 4), np.float32))
    rows = _rows(tmp_path / "v.npy", False)
    rows.hash_as_read()
    out = np.empty((100, 4), np.float32)
    rows.read_into(out[50:], 50)  # skipped the first rows
    rows.read_into(out[:50], 0)
    assert rows.file_digest() is None
    rows.hash_as_read()
    rows.read_into(out[:50], 0)  # not every row
    assert rows.file_digest() is None
    np.save(tmp_path / "w.npy", np.ones((100, 4), np.float64))  # not read from the file's bytes
    other = _rows(tmp_path / "w.npy", False)
    other.hash_as_read()
    _read_all(other, 10)
    assert other.file_digest() is None
