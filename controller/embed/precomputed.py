"""Vectors made by another pipeline, read from .npy files.

Row i of `options.vectors` is the i-th corpus document, or the document named
on line i of `options.ids`. Golden queries come from `options.queryVectors`
with `options.queryIds`. Every matrix is checked for shape, dimension and
NaN/inf before anything is built from it.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from controller.embed.base import l2_normalize, unit_rows
from controller.errors import EmbedError, InvalidInput
from controller.inputs import iter_lines, load_npy
from controller.manifest.providers import capabilities
from controller.progress import Progress, silent

KNOWN_OPTIONS = {"vectors", "ids", "queryVectors", "queryIds"}


class PrecomputedEmbedder:
    capabilities = capabilities("precomputed")

    def __init__(self, dim: int, normalize: bool, paths: dict[str, Path],
                 fingerprint: dict[str, Any], manifest: Path | None = None) -> None:
        self.dim = dim
        self.normalize = normalize
        self.fingerprint = fingerprint
        self.paths = paths
        self.manifest = manifest
        if "vectors" not in paths:
            raise InvalidInput("provider precomputed needs options.vectors (a .npy file)",
                               file=manifest, field="spec.model.options.vectors", value=None)
        self._scanned: tuple[np.ndarray | None, InvalidInput | None] | None = None  # scan()'s outcome

    def scan(self, rows_checked: bool = False) -> None:
        """What validate() checks without the corpus (the vectors' header, shape and NaN/inf), ahead of it.

        The engine runs this on a second thread while it parses the corpus; what it finds (the
        matrix, or the error) is kept, and validate() reports it in its own order. ``rows_checked``:
        every row of ``file_rows()`` was read and found finite already (a build ahead read them), so
        only the header is checked.
        """
        try:
            self._scanned = (self._matrix("vectors", scan=not rows_checked), None)
        except InvalidInput as exc:
            self._scanned = (None, exc)

    def validate(self, ids: Sequence[str]) -> None:
        """Shape, dimension, finiteness and id coverage of every supplied matrix."""
        matrix, error = self._scanned or (self._matrix("vectors"), None)
        if error is not None:
            raise error
        _rows_for(ids, self._ids("ids", matrix.shape[0], "vectors"), matrix.shape[0], self.manifest,
                  "spec.model.options.vectors", self.paths["vectors"])
        if "queryVectors" in self.paths:
            self._ids("queryIds", self._matrix("queryVectors").shape[0], "queryVectors")

    def embed_documents(self, ids: Sequence[str], texts: Sequence[str],
                        progress: Progress = silent) -> StreamedRows:
        """The documents' rows, read (and normalised) chunk by chunk as the build takes them.

        validate() scanned for NaN/inf at observe time; each chunk is checked again as it is read.
        """
        matrix = self._matrix("vectors", scan=False)
        row_ids = self._ids("ids", matrix.shape[0], "vectors")
        rows = _rows_for(ids, row_ids, matrix.shape[0], self.manifest, "spec.model.options.vectors",
                         self.paths["vectors"])
        progress(len(ids), len(ids))
        return StreamedRows(matrix, rows, self.normalize, f"{self.paths['vectors'].name}")

    def file_rows(self) -> StreamedRows | None:
        """Every row of options.vectors in file order, streamed as embed_documents streams them (row i
        is document i); None with options.ids, where the corpus decides which row goes where. Nothing is
        checked but the header: the rows' chunks refuse NaN/inf as they are read."""
        if "ids" in self.paths:
            return None
        matrix = self._matrix("vectors", scan=False)
        return StreamedRows(matrix, np.arange(matrix.shape[0]), self.normalize, f"{self.paths['vectors'].name}")

    def embed_queries(self, ids: Sequence[str], texts: Sequence[str]) -> np.ndarray:
        if "queryVectors" not in self.paths:
            raise EmbedError(
                "provider precomputed cannot embed query text; set options.queryVectors and "
                "options.queryIds for golden queries"
            )
        matrix = self._matrix("queryVectors")
        row_ids = self._ids("queryIds", matrix.shape[0], "queryVectors")
        rows = _rows_for(ids, row_ids, matrix.shape[0], self.manifest, "spec.model.options.queryVectors",
                         self.paths["queryVectors"])
        return np.asarray(StreamedRows(matrix, rows, self.normalize, self.paths['queryVectors'].name))

    def query_ids(self) -> list[str] | None:
        """Ids of the supplied query vectors: the golden queries this model can answer."""
        if "queryVectors" not in self.paths:
            return None
        n = self._matrix("queryVectors").shape[0]
        return self._ids("queryIds", n, "queryVectors")

    def _matrix(self, key: str, scan: bool = True) -> np.ndarray:
        path = self.paths[key]
        fld = f"spec.model.options.{key}"
        # header, dtype, shape and truncation are checked before the data is mapped; never unpickled
        matrix = load_npy(path, file=self.manifest, field=fld)
        if matrix.shape[1] != self.dim:
            raise InvalidInput(
                f"{path.name} has {matrix.shape[1]} columns but spec.model.dim is {self.dim}",
                file=self.manifest, field=fld, value=str(path))
        finite = _finite_rows(matrix) if scan else None
        if finite is not None and not finite.all():
            row = int(np.argmin(finite))
            raise InvalidInput(f"{path.name} contains NaN or inf (first at row {row})",
                               file=self.manifest, field=fld, value=str(path))
        return matrix

    def _ids(self, key: str, n_rows: int, matrix_key: str) -> list[str] | None:
        if key not in self.paths:
            return None
        path = self.paths[key]
        ids = [line.strip() for _, line in iter_lines(path, file=self.manifest, field=f"spec.model.options.{key}",
                                                      what="id file") if line.strip()]
        if len(ids) != n_rows:
            raise InvalidInput(
                f"{path.name} lists {len(ids)} ids but options.{matrix_key} has {n_rows} rows",
                file=self.manifest, field=f"spec.model.options.{key}", value=str(path))
        return ids


CHUNK = 65_536  # rows per step: bounded temporaries whatever the matrix size


def _finite_rows(matrix: np.ndarray) -> np.ndarray:
    """Whether each row is free of NaN/inf, scanned in chunks (no full-size boolean temporary)."""
    out = []
    for s in range(0, matrix.shape[0], CHUNK):
        out.append(np.isfinite(matrix[s:s + CHUNK]).all(axis=1))
        release_rows(matrix, s, s + CHUNK)
    return np.concatenate(out)


def release_rows(matrix: np.ndarray, start: int, stop: int) -> None:
    """Drop rows start..stop of a memory-mapped .npy from this process's resident memory.

    Pages of a read-only file mapping that were read stay counted in the process's RSS until
    unmapped; after one pass over a 1.5 GB vector file that is 1.5 GB more peak memory than the
    arrays built from it. MADV_DONTNEED lets them go: the kernel's page cache keeps them, and a
    later read of the same rows maps them back, so this never changes what is read. A no-op for
    arrays that are not memory maps (or where madvise is unavailable).
    """
    base = getattr(matrix, "_mmap", None)
    advise = getattr(base, "madvise", None)
    dontneed = getattr(mmap, "MADV_DONTNEED", None)
    if advise is None or dontneed is None or not isinstance(matrix, np.memmap) or not matrix.flags.c_contiguous:
        return
    stop = min(stop, matrix.shape[0])
    if stop <= start:
        return
    row = matrix.strides[0]
    lead = matrix.offset % mmap.ALLOCATIONGRANULARITY  # where the array starts inside the mapping
    first = lead + start * row
    last = lead + stop * row
    first -= first % mmap.PAGESIZE
    try:
        advise(dontneed, first, min(last, len(base)) - first)
    except (OSError, ValueError):
        pass  # advice only


class StreamedRows:
    """The (n, dim) float32 rows a build adds, made from the memory map only as they are asked for.

    Stands in for the full array: a slice (or a row index array) gives a new float32 chunk,
    L2-normalised when asked, with the row-wise arithmetic of normalising the whole matrix at once
    (bit-identical results), and checked for NaN/inf; the mapped pages of rows read in file order
    are released at once. So a build that takes the rows in chunks holds no full-size copy of them
    and no resident memory map; ``np.asarray`` still gives the whole array for those that need it.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, matrix: np.ndarray, rows: np.ndarray, normalize: bool, name: str) -> None:
        self.matrix = matrix
        self.rows = rows
        self.normalize = normalize
        self.name = name
        self.shape = (int(rows.shape[0]), int(matrix.shape[1]))
        self.in_order = rows.shape[0] == matrix.shape[0] and bool(np.array_equal(rows, np.arange(matrix.shape[0])))
        self._hash: _ChunkHash | None = None  # the file's sha256 as it is read, when asked (hash_as_read)

    def hash_as_read(self) -> None:
        """Hash the file (its sha256, as store/signature.py's content) from the bytes ``read_into`` reads,
        when every row is read once, in order: ``file_digest`` then gives it without a second read."""
        span = self._file_span(0, 0)
        if span is not None:
            self._hash = _ChunkHash(_pread_all(span[0], 0, span[1]))

    def file_digest(self) -> str | None:
        """The file's sha256 from what was read (and its bytes after the last row), or None when the
        reads did not cover every row exactly once, in order. Ends the hashing either way."""
        hashed, self._hash = self._hash, None
        if hashed is None:
            return None
        digest = hashed.end()
        span = self._file_span(self.shape[0], self.shape[0])
        if span is None or hashed.rows != self.shape[0]:
            return None
        digest.update(_pread_all(span[0], span[1], None))
        return digest.hexdigest()

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | np.ndarray | Sequence[int]) -> np.ndarray:
        n = self.shape[0]
        if isinstance(key, slice) and key.indices(n)[2] == 1:
            start, stop, _ = key.indices(n)
            stop = max(start, stop)
            if self.in_order:
                block = np.array(self.matrix[start:stop], dtype=np.float32)
                release_rows(self.matrix, start, stop)  # copied: the mapped pages need not stay resident
            else:
                block = np.array(self.matrix[self.rows[start:stop]], dtype=np.float32)
                if stop >= n:
                    release_rows(self.matrix, 0, self.matrix.shape[0])
            return self._checked(block, start)
        wanted = np.arange(n)[key] if isinstance(key, slice) else np.asarray(key)
        return self._checked(np.array(self.matrix[self.rows[wanted]], dtype=np.float32), None)

    def read_into(self, out: np.ndarray, start: int) -> np.ndarray:
        """Rows start.. into ``out`` (float32, C order: a writer's own storage), checked and normalised
        there, as ``self[start:start + len(out)]`` would give them; returns ``out``.

        Rows in file order of a native float32 file are read with preadv straight into ``out``: no
        mapped page is touched and no chunk allocated, one copy from the page cache instead of a
        page-faulting copy from the map and a second into the writer (at 1M rows, 1.2 s of CPU
        against 0.6 s, while the corpus is parsed beside it).
        """
        stop = start + out.shape[0]
        source = self._file_span(start, stop)
        hashed = self._hash
        if hashed is not None:
            hashed.before_writing(out)  # a buffer used again: its last chunk hashed first
        if source is None or not out.flags.c_contiguous or out.dtype != np.float32:
            if hashed is not None:
                hashed.rows = -1  # not read from the file's bytes here: no digest
            out[...] = self[start:stop]
            return out
        _pread_fully(*source, out, self.name)
        if hashed is not None:
            hashed.add(out, start)  # the bytes as read, hashed beside the checks and the next reads
        checked = self._checked(out, start, None if hashed is None else hashed.wait)
        if checked is not out:
            if hashed is not None:
                hashed.wait()
            out[...] = checked
        return out

    def _file_span(self, start: int, stop: int) -> tuple[str, int] | None:
        """(file, byte offset) of rows start..stop when they lie in the file as float32 rows, else None."""
        matrix = self.matrix
        if (not self.in_order or not isinstance(matrix, np.memmap) or matrix.filename is None
                or matrix.dtype != np.dtype("<f4") or not matrix.flags.c_contiguous or stop > matrix.shape[0]):
            return None
        return matrix.filename, matrix.offset + start * matrix.strides[0]

    def _checked(self, block: np.ndarray, first: int | None,
                 before_change: Callable[[], None] | None = None) -> np.ndarray:
        """Normalised in place (as l2_normalize would: x / norm, zero rows left zero), NaN/inf refused.
        ``before_change``: called before ``block`` is changed in place (its bytes are being hashed)."""
        if self.normalize:
            squares = np.einsum("ij,ij->i", block, block)
            if np.isfinite(squares).all():  # a NaN/inf anywhere in a row makes its norm NaN/inf
                if unit_rows(block, squares):
                    return block  # unit (or zero) already: normalising again could only move an ulp
                norms = np.linalg.norm(block, axis=1, keepdims=True)
                norms[norms == 0] = 1.0
                if before_change is not None:
                    before_change()
                np.divide(block, norms, out=block)
                return block
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():  # (a finite row whose squares overflow has an inf norm but is kept)
            row = int(np.argmin(finite))
            where = f"row {first + row}" if first is not None else "one of the rows asked for"
            raise EmbedError(f"{self.name} contains NaN or inf (first at {where}); it changed after validation")
        return l2_normalize(block) if self.normalize else block

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        for s in range(0, self.shape[0], CHUNK):
            out[s:s + CHUNK] = self[s:s + CHUNK]
        return out if dtype is None else out.astype(dtype, copy=False)


def _pread_fully(filename: str, offset: int, out: np.ndarray, name: str) -> None:
    """Fill ``out`` with the file's bytes from ``offset``; a file that ends first changed after validation."""
    view = memoryview(out).cast("B")
    fd = os.open(filename, os.O_RDONLY)
    try:
        while view.nbytes:
            got = os.preadv(fd, [view], offset)
            if got == 0:
                raise EmbedError(f"{name} is shorter than its header says; it changed after validation")
            view, offset = view[got:], offset + got
    finally:
        os.close(fd)


class _ChunkHash:
    """sha256 of a file from the chunks a reader reads in order, updated on a thread of its own (hashlib
    lets go of the GIL), so that the reader checks the chunk and reads the next one meanwhile: at 1M rows
    the hashing (1.2 s) was a third of the reading that training waits for."""

    def __init__(self, head: bytes) -> None:
        self.digest = hashlib.sha256(head)
        self.rows = 0  # rows hashed or queued, in file order; -1 once the order broke
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hash-rows")
        self._queued: list[tuple[Future, np.ndarray]] = []

    def add(self, chunk: np.ndarray, start: int) -> None:
        if self.rows != start:
            self.rows = -1
            return
        self._queued = [(f, c) for f, c in self._queued if not f.done()]
        self._queued.append((self._pool.submit(self.digest.update, chunk), chunk))
        self.rows += chunk.shape[0]

    def before_writing(self, out: np.ndarray) -> None:
        """Wait for the chunks queued from ``out``'s memory (a buffer the reader fills again)."""
        if any(np.may_share_memory(out, chunk) for _, chunk in self._queued):
            self.wait()

    def wait(self) -> None:
        for future, _ in self._queued:
            future.result()
        self._queued = []

    def end(self) -> Any:
        """The digest of every chunk queued (the thread ended)."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)
        return self.digest


def _pread_all(filename: str, offset: int, size: int | None) -> bytes:
    """``size`` bytes of the file from ``offset`` (None: to its end), fewer where it ends first."""
    fd = os.open(filename, os.O_RDONLY)
    try:
        parts = []
        while size is None or size > 0:
            part = os.pread(fd, 1 << 20 if size is None else min(size, 1 << 20), offset)
            if not part:
                break
            parts.append(part)
            offset += len(part)
            size = None if size is None else size - len(part)
        return b"".join(parts)
    finally:
        os.close(fd)


def _rows_for(wanted: Sequence[str], row_ids: list[str] | None, n_rows: int,
              manifest: Path | None, fld: str, path: Path) -> np.ndarray:
    """Row indices of `wanted` ids: positional when no id file is given."""
    if row_ids is None:
        if n_rows != len(wanted):
            raise InvalidInput(
                f"{path.name} has {n_rows} rows but there are {len(wanted)} documents; "
                "rows must match the corpus one to one, or name them with options.ids",
                file=manifest, field=fld, value=str(path))
        return np.arange(len(wanted))
    position = {doc_id: i for i, doc_id in enumerate(row_ids)}
    missing = [doc_id for doc_id in wanted if doc_id not in position]
    if missing:
        raise InvalidInput(f"no vector for id {missing[0]!r} ({len(missing)} missing)",
                           file=manifest, field=fld, value=str(path))
    return np.fromiter((position[d] for d in wanted), dtype=np.int64, count=len(wanted))
