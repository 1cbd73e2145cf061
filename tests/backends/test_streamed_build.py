"""The streamed build path (issue 11): precomputed rows read chunk by chunk from the memory map,
normalised once, added to a Flat index whose storage is sized once; what comes back is unchanged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.backends.base import BackendSettings, VersionRef
from controller.backends.faiss import FaissBackend, FaissWriter
from controller.embed.base import l2_normalize, unit_rows
from controller.embed.precomputed import StreamedRows
from controller.errors import EmbedError, InvalidInput
from controller.store import atomic
from controller.store.corpus import read_corpus

DIM = 24


def matrix(tmp_path: Path, x: np.ndarray) -> np.ndarray:
    np.save(tmp_path / "v.npy", x)
    return np.load(tmp_path / "v.npy", mmap_mode="r")


def raw(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, DIM)) * 3).astype(np.float32)


@pytest.mark.parametrize("order", ["in order", "by id"])
def test_streamed_rows_are_the_bits_normalising_the_whole_matrix_gave(tmp_path: Path, order: str) -> None:
    x = raw(1000)
    x[7] = 0.0  # a zero row stays zero
    rows = np.arange(1000) if order == "in order" else np.random.default_rng(1).permutation(1000)
    streamed = StreamedRows(matrix(tmp_path, x), rows, True, "v.npy")
    whole = l2_normalize(x[rows])
    got = np.concatenate([streamed[s:s + 128] for s in range(0, 1000, 128)])
    np.testing.assert_array_equal(got.view(np.int32), whole.view(np.int32))
    np.testing.assert_array_equal(np.asarray(streamed).view(np.int32), whole.view(np.int32))
    np.testing.assert_array_equal(streamed[np.array([5, 3])], whole[[5, 3]])  # drift takes rows by index


def test_unit_rows_are_passed_through_untouched(tmp_path: Path) -> None:
    unit = l2_normalize(raw(300))
    streamed = StreamedRows(matrix(tmp_path, unit), np.arange(300), True, "v.npy")
    np.testing.assert_array_equal(streamed[0:300].view(np.int32), unit.view(np.int32))
    assert unit_rows(unit) and not unit_rows(raw(5))


def test_a_streamed_chunk_with_nan_is_refused_naming_its_row(tmp_path: Path) -> None:
    x = raw(100)
    x[42, 3] = np.nan
    streamed = StreamedRows(matrix(tmp_path, x), np.arange(100), True, "v.npy")
    streamed[0:40]  # rows before it are fine
    with pytest.raises(EmbedError, match="row 42"):
        streamed[40:80]


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_rows_that_overflow_their_norm_are_not_called_nan(tmp_path: Path) -> None:
    x = raw(10)
    x[2] = 3e30  # finite, but its squares are not
    got = StreamedRows(matrix(tmp_path, x), np.arange(10), True, "v.npy")[0:10]
    np.testing.assert_array_equal(got[3:], l2_normalize(x)[3:])


def ref(tmp_path: Path, metric: str = "cosine") -> VersionRef:
    (tmp_path / "v1").mkdir(exist_ok=True)
    return VersionRef("t", "v1", DIM, metric, "fp", tmp_path / "v1")


def write_in_chunks(writer: Any, x: np.ndarray, reserved: int, chunk: int) -> None:
    """What the engine does: an optional reserve, then the rows a chunk at a time."""
    if reserved:
        writer.reserve(reserved)
    for s in range(0, len(x), chunk):
        writer.add(x[s:s + chunk])
    writer.finish()


@pytest.mark.parametrize("reserved", [0, 700, 1000, 1500])  # none, fewer than added, exact, more
@pytest.mark.parametrize("unit", [True, False])
def test_a_reserved_flat_index_holds_exactly_the_rows_added(tmp_path: Path, reserved: int, unit: bool) -> None:
    x = l2_normalize(raw(1000)) if unit else raw(1000)
    write_in_chunks(FaissWriter(ref(tmp_path), "Flat"), x, reserved, 96)
    opened = FaissBackend().open_version(ref(tmp_path))
    assert opened.count() == 1000
    np.testing.assert_array_equal(np.asarray(opened.vectors()).view(np.int32), x.view(np.int32))
    _, rows = opened.search(x[:20], 1)
    assert (rows[:, 0] == np.arange(20)).all()
    assert (tmp_path / "v1" / "index.faiss").stat().st_size == 1000 * DIM * 4 + 45  # no reserve left in the file
    with np.load(tmp_path / "v1" / "fixups.npz") as fixups:
        assert (fixups["positions"].size == 0) == unit  # unit rows are indexed as given: nothing to fix


def test_unit_rows_are_indexed_as_given(tmp_path: Path) -> None:
    x = l2_normalize(raw(200))
    writer = FaissWriter(ref(tmp_path), "Flat")
    writer.reserve(200)
    writer.add(x)
    writer.finish()
    index = FaissBackend().open_version(ref(tmp_path)).index
    np.testing.assert_array_equal(index.reconstruct_n(0, 200).view(np.int32), x.view(np.int32))
    np.testing.assert_array_equal(np.load(tmp_path / "v1" / "norms.npy"), np.ones(200, np.float32))


@pytest.mark.parametrize("reserved", [0, 300, 400])
def test_a_trained_index_keeps_its_raw_rows_once(tmp_path: Path, reserved: int) -> None:
    x = raw(400)
    write_in_chunks(FaissBackend().create_version(ref(tmp_path), BackendSettings("faiss", {"factory": "IVF4,Flat"})),
                    x, reserved, 64)
    opened = FaissBackend().open_version(ref(tmp_path))
    np.testing.assert_array_equal(np.asarray(opened.vectors()), x)
    assert opened.count() == 400


def test_the_corpus_content_hash_is_the_files_sha256(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    lines = [json.dumps({"id": f"d{i}", "text": f"text {i}"}) for i in range(3000)]
    path.write_text("\n".join(lines) + "\n")
    regular = read_corpus(path, "id", ["text"], content=True)
    assert regular.content == hashlib.sha256(path.read_bytes()).hexdigest()
    path.write_text("\n\n".join(lines))  # blank lines: the careful readers, hashed before they read
    careful = read_corpus(path, "id", ["text"], content=True)
    assert careful.content == hashlib.sha256(path.read_bytes()).hexdigest()
    assert (careful.ids, careful.hashes) == (regular.ids, regular.hashes)
    assert read_corpus(path, "id", ["text"]).content is None


def test_block_reader_matches_the_line_reader(tmp_path: Path) -> None:
    from controller.store import corpus as C

    path = tmp_path / "corpus.jsonl"
    docs = [{"_id": f"d{i}", "title": "t" if i % 3 else "", "text": f"body {i} \u00e9"} for i in range(5000)]
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(json.dumps(d) for d in docs).encode())  # a BOM, no final newline
    fields = C._Fields("_id", ["title", "text"])
    assert C._read_blocks(path, fields, None) == C._read_checked(path, fields, None)
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InvalidInput, match=r"duplicate document id 'a' at line 2 \(first at line 1\)"):
        C._read_blocks(tmp_path / "dup.jsonl", C._Fields("id", ["text"]), None)


def test_long_printable_lists_are_still_json_dumps_byte_for_byte(tmp_path: Path) -> None:
    ids = [f"doc-{i}/\"q\"\\" for i in range(1000)]
    atomic.write_json(tmp_path / "ids.json", ids)
    assert (tmp_path / "ids.json").read_text() == json.dumps(ids, indent=2, sort_keys=True) + "\n"
