"""The embedded FAISS backend: a version's vectors are files in the store's version directory.

Everything that knows FAISS lives here: index_factory strings, which factories are trained, how
the metric maps onto a FAISS index, memory-mapped loading, and how raw vectors come back for drift.

Files in ``VersionRef.location`` (the store's staging directory while building, so the store's
rename of that directory is what makes a version visible and crash safe):

    index.faiss     the index; row i = document i of the store's ids.json
    norms.npy       cosine only, when the index stores the vectors (Flat, HNSW..Flat): per row
                    the factor back to the row as added (its raw norm; 1 for a row that was unit
                    already and is indexed as given), so ``vectors()`` gives back raw vectors
    fixups.npz      cosine only: the few components that rescaling does not restore bit for bit
                    (positions, raw values); empty for vectors that were normalised already
    vectors.npy     only for indexes that do not store the vectors (IVF, PQ, ...): the raw
                    vectors that drift checks and rebuilds need

A corpus revision of a Flat version (same model, most rows unchanged) shares the unchanged rows:

    base-index.faiss, base-norms.npy, base-fixups.npz
                    hard links to the files of the full version the rows come from (no bytes)
    rows.npy        per row: its row in base-index.faiss, or -(j + 1) for row j of index.faiss
    index.faiss     (and its norms/fixups) only the rows that are new or changed

One copy of the vectors per version: a Flat index *is* the vectors, so no vectors.npy beside it.
Unit rows (every L2-normalised embedding) are indexed as given, so they come back exactly; rows
that are normalised here are rescaled by their norms; raw un-normalised vectors differ in
about 8% of components by one ulp, and those values are kept in fixups.npz, so ``vectors()`` is
bit-identical to what was added in every case and drift values cannot move.

The alias of this backend is the store's routing record: ``set_alias``/``get_alias`` are no-ops,
and a crashed build is a staging directory the store's recovery removes, so ``list_versions``
has nothing of its own to report.
"""

from __future__ import annotations

import functools
import io
import os
import re
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import ClassVar, Iterator, Sequence

import faiss
import numpy as np

from controller.backends.base import BackendSettings, Capabilities, Metric, VersionRef
from controller.embed.base import l2_normalize, unit_rows
from controller.errors import InvalidInput, NotFound, StoreError
from controller.store import atomic

INDEX_FILE = "index.faiss"
NORMS_FILE = "norms.npy"
FIXUPS_FILE = "fixups.npz"
VECTORS_FILE = "vectors.npy"
ROWS_FILE = "rows.npy"
BASE = "base-"  # prefix of the hard links to the full version a revision shares its rows with
OWN_FILES = (INDEX_FILE, NORMS_FILE, FIXUPS_FILE, VECTORS_FILE, ROWS_FILE,
             BASE + INDEX_FILE, BASE + NORMS_FILE, BASE + FIXUPS_FILE)
#: a revision stores its changed rows itself while they are at most this share of its rows;
#: beyond it, a full index is written again (searching two indexes costs more than it saves)
MAX_SHARED_DELTA = 0.2

ADD_CHUNK = 20_000
#: dtype objects, not np.float32/np.int64: numpy converts the type to these on every call otherwise
_F32, _I64 = np.dtype(np.float32), np.dtype(np.int64)
swig_ptr = faiss.swig_ptr
PARAMS = ("factory",)
FACTORY_FIELD = "spec.index.factory"

#: index_factory components that learn from the data (coarse quantiser, product quantiser).
TRAINED_MARKERS: tuple[str, ...] = ("IVF", "PQ")


def is_trained_factory(factory: str) -> bool:
    """True when the factory string has a component trained on the vectors (pure: no FAISS call)."""
    return any(marker in factory for marker in TRAINED_MARKERS)


def factory_of(settings: BackendSettings) -> str:
    return str(settings.params.get("factory", "Flat"))


def _faiss_metric(metric: Metric) -> int:
    return faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT


def _prepare(x: np.ndarray, metric: Metric) -> np.ndarray:
    """What FAISS gets for `x`: a new normalised array for cosine (the caller's rows keep their norms)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    return l2_normalize(x) if metric == "cosine" else x


# factory strings index_factory accepts but whose build kills or hangs the process (C++ assert,
# segfault, endless graph search), or that cannot be filled by row: refused before anything is written
_GRAPH_DEGREE = (("HNSW", 2, "segfaults or aborts"), ("NSG", 8, "can run forever"))
_ID_MAP = re.compile(r"(?:^|,)\s*IDMap2?\s*(?:,|$)")
_FAISS_WHERE = re.compile(r"^Error in .*? at \S+:\d+: (?:Error: )?")


def _unbuildable(factory: str) -> str | None:
    """Why FAISS accepts this factory string but cannot build it here; None when it can."""
    for name, least, fate in _GRAPH_DEGREE:
        for found in re.finditer(rf"(?<![A-Za-z]){name}(\d+)", factory):
            if int(found.group(1)) < least:
                return f"{name} with a graph degree of {found.group(1)} {fate} in FAISS; use {name}{least} or more"
    if _ID_MAP.search(factory):
        return "IDMap factories are not supported: the backend numbers rows itself (use e.g. Flat or HNSW32)"
    return None


def _new_index(dim: int, factory: str, metric: Metric) -> faiss.Index:
    why = _unbuildable(factory)
    if why:
        raise InvalidInput(why, field=FACTORY_FIELD, value=factory)
    try:
        return faiss.index_factory(dim, factory, _faiss_metric(metric))
    except RuntimeError as exc:
        detail = _FAISS_WHERE.sub("", str(exc).strip().splitlines()[-1])
        raise InvalidInput(f"FAISS cannot build index_factory({dim}, {factory!r}): {detail}",
                           field=FACTORY_FIELD, value=factory) from exc


def _stores_vectors(index: faiss.Index) -> bool:
    """The index keeps every vector uncompressed (Flat, or HNSW over a Flat storage)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexHNSW):
        index = faiss.downcast_index(index.storage)
    return isinstance(index, faiss.IndexFlat)


def _search(index: faiss.Index, queries: np.ndarray, k: int, metric: Metric,
            params: faiss.SearchParameters | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) padded to k with row -1 / score -inf; higher is better for every metric."""
    queries = _prepare(np.atleast_2d(queries), metric)
    got = min(k, index.ntotal)
    if got > 0:
        scores, rows = index.search(queries, got, params=params)
        if metric == "l2":
            scores = -scores
    else:
        scores = np.empty((queries.shape[0], 0), dtype=np.float32)
        rows = np.empty((queries.shape[0], 0), dtype=np.int64)
    if -1 in rows:  # FAISS pads with row -1 and its worst finite score; a full result (the rule) is kept as is
        scores = np.where(rows >= 0, scores, -np.inf).astype(np.float32)
    if got < k:
        pad = k - got
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
        rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
    return scores, rows.astype(np.int64, copy=False)


class _Rescaler:
    """Per row, the factor scaling the stored unit row back to the row as added, and the components
    that rescaling does not restore exactly.

    The factor is the raw norm of a row that was normalised, and 1 for a row added as given
    because it was unit already (an embedder's normalised output): those come back bit for bit.
    """

    def __init__(self) -> None:
        self.norms: list[np.ndarray] = []
        self.positions: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.offset = 0

    def add(self, raw: np.ndarray, unit: np.ndarray) -> None:
        norms = np.linalg.norm(raw, axis=1).astype(np.float32)
        back = restore(unit, norms)
        wrong = np.flatnonzero(back.view(np.int32) != raw.view(np.int32))
        self.norms.append(norms)
        self.positions.append(wrong + self.offset)
        self.values.append(raw.reshape(-1)[wrong])
        self.offset += raw.size

    def add_as_given(self, raw: np.ndarray) -> None:
        self.norms.append(np.ones(raw.shape[0], dtype=np.float32))
        self.offset += raw.size

    def record(self, raw: np.ndarray, prepared: np.ndarray) -> None:
        """The factors of rows indexed as ``prepared`` (``_unit``'s answer: ``raw`` itself or a normalised copy)."""
        if prepared is raw:
            self.add_as_given(raw)
        else:
            self.add(raw, prepared)

    def write(self, location: Path) -> None:
        atomic.write_npy(location / NORMS_FILE, np.concatenate(self.norms) if self.norms
                         else np.zeros(0, np.float32))
        positions = np.concatenate(self.positions) if self.positions else np.zeros(0, np.int64)
        values = np.concatenate(self.values) if self.values else np.zeros(0, np.float32)
        atomic.write_with(location / FIXUPS_FILE,
                          lambda path: _save_npz(path, positions=positions, values=values))

def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def restore(unit: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Unit rows scaled back to their raw norms (zero rows stay zero, as l2_normalize left them)."""
    scale = np.where(norms == 0, np.float32(1.0), norms).astype(np.float32)
    return unit * scale[:, None]


def _unit(x: np.ndarray, metric: Metric) -> np.ndarray:
    """What FAISS indexes for rows ``x``: x itself when no normalisation is due, else a normalised copy."""
    return x if metric != "cosine" or unit_rows(x) else l2_normalize(x)


# ---- files made from their rows as they come ------------------------------------------------------
# An IndexFlatIP/IndexFlatL2 file is a fixed header (fourcc, d, ntotal, two constants, is_trained,
# metric, the code count) followed by the rows as float32. Writing the rows as they are added needs no
# index in memory: FAISS would first zero-fill a buffer of every row (1.5 GB at 1M x 384, about 1.5 s
# of page faults), then copy the rows into it, then write it; and the disk can be writing the first
# rows while later ones are still read. The file is written through a descriptor of the store (a file
# in the staging directory), or of a file with no name yet (a build ahead of validation,
# engine/ahead.py), which ``place`` links in. A trained index keeps its raw rows for vectors.npy, a
# header (shape and dtype, padded to 64 bytes) and the rows: they are kept inside that file's bytes
# (``_vectors_image``), so it is written from them as it is, with direct I/O. ``flat_file_ready()``
# and ``npy_file_ready()`` check once per process that the headers made here give FAISS's and
# numpy's own bytes; where they do not, the writer keeps the old path.

_FOURCC = {faiss.METRIC_INNER_PRODUCT: b"IxFI", faiss.METRIC_L2: b"IxF2"}
_FLAT_TYPES = (faiss.IndexFlat, faiss.IndexFlatIP, faiss.IndexFlatL2)  # index_factory's Flat classes
_HEADER = struct.Struct("<4siqqq?iq")
_DUMMY = 1 << 20  # write_index_header's two unused fields


def flat_header(dim: int, ntotal: int, metric_type: int) -> bytes:
    """write_index's bytes before the rows of a Flat index of ``ntotal`` rows."""
    return _HEADER.pack(_FOURCC[metric_type], dim, ntotal, _DUMMY, _DUMMY, True, metric_type, ntotal * dim)


def npy_header(rows: int, dim: int) -> bytes:
    """np.save's bytes before the data of a (rows, dim) float32 array."""
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return out.getvalue()


@functools.cache
def flat_file_ready() -> bool:
    """Whether ``flat_header`` + the rows is what this FAISS writes for a Flat index (both metrics, 0-3 rows)."""
    rng = np.random.default_rng(0)
    for metric_type in _FOURCC:
        for n in range(4):
            rows = rng.standard_normal((n, 5), dtype=np.float32)
            index = faiss.IndexFlat(5, metric_type)
            if n:
                index.add(rows)
            if faiss.serialize_index(index).tobytes() != flat_header(5, n, metric_type) + rows.tobytes():
                return False
    return True


@functools.cache
def npy_file_ready() -> bool:
    """Whether ``npy_header`` + the rows is what this numpy's np.save writes (a few shapes)."""
    rng = np.random.default_rng(0)
    for n, dim in ((0, 5), (3, 5), (1000, 384), (123_457, 3)):  # small, so the check costs milliseconds
        rows = rng.standard_normal((n, dim), dtype=np.float32)
        out = io.BytesIO()
        np.save(out, rows, allow_pickle=False)
        if out.getvalue() != npy_header(n, dim) + rows.tobytes():
            return False
    return True


class FlatFile:
    """The index file of a Flat index being built: rows appended in order, the header last."""

    def __init__(self, fd: int, dim: int, metric_type: int, *, name: str, anonymous: bool) -> None:
        self.fd = fd
        self.name = name  # for errors: the file, or where a file with no name was made
        self.dim = dim
        self.metric_type = metric_type
        self.anonymous = anonymous
        self.rows = 0
        self.sealed = False
        self._open = ExitStack()
        try:
            self._open.enter_context(atomic.written_back(fd, name))  # made durable while rows still come
            with self._named():
                _write_fully(fd, flat_header(dim, 0, metric_type))  # its place; the real one once the count is known
        except BaseException:
            self.close()
            raise

    @classmethod
    def create(cls, path: Path, dim: int, metric_type: int) -> FlatFile:
        return cls(atomic.open_new(path), dim, metric_type, name=str(path), anonymous=False)

    @classmethod
    def nameless(cls, directory: Path, dim: int, metric_type: int) -> FlatFile | None:
        """On ``directory``'s file system, with no name (nothing of the store is written); None where
        the system cannot make such a file."""
        fd = atomic.open_anonymous(directory)
        return None if fd is None else cls(fd, dim, metric_type, name=f"{directory}/(index file, no name yet)",
                                           anonymous=True)

    def append(self, rows: np.ndarray) -> None:
        """C-contiguous float32 rows of this index's dim, as IndexFlat.add would store them."""
        with self._named():
            _write_fully(self.fd, memoryview(rows).cast("B"))
        self.rows += rows.shape[0]

    def seal(self) -> None:
        """The header with the row count, then fsync: complete and durable (once)."""
        if self.sealed:
            return
        self._open.close()
        with self._named():
            os.pwrite(self.fd, flat_header(self.dim, self.rows, self.metric_type), 0)
            os.fsync(self.fd)
        self.sealed = True

    @contextmanager
    def _named(self) -> Iterator[None]:
        """A write error (a full disk) names the file: a descriptor's error has no file name."""
        try:
            yield
        except OSError as exc:
            if exc.filename is not None:
                raise
            raise OSError(exc.errno, exc.strerror, self.name) from exc

    def place(self, path: Path) -> None:
        """The sealed file at ``path`` (a file without a name is linked there), and closed."""
        self.seal()
        if self.anonymous:
            atomic.link_anonymous(self.fd, path)
        self.close()

    def close(self) -> None:
        with suppress(OSError):  # a file not sealed is thrown away: its write-back error does not matter
            self._open.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _write_fully(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view.nbytes:
        view = view[os.write(fd, view):]


class FaissWriter:
    """Adds rows as they come, or (a factory to train) keeps them until ``finish`` trains on all.

    The index file is written in ``finish``, into the store's staging directory, which the store
    renames into place only after the whole version is written. Rows are normalised at most once,
    chunk by chunk (rows that are unit already are indexed as given); with ``reserve`` a Flat
    index's storage, or the raw rows a trained index keeps, is sized once, so a build holds the
    index (plus those rows) and one chunk, never a second full array. With ``reserve``, a new Flat
    index is not held at all: its file is written as the rows come (FlatFile, above), in the
    staging directory, or (``write_ahead``) in a file with no name that ``finish`` links there; a
    trained index's raw rows are kept inside vectors.npy's bytes, which ``finish`` writes directly.
    """

    def __init__(self, ref: VersionRef, factory: str, *, base: faiss.Index | None = None,
                 seed: int = 1234) -> None:
        if ref.location is None:
            raise StoreError(f"the FAISS backend needs the store's directory for {ref.index}/{ref.version}")
        self.ref = ref
        self.factory = factory
        self.seed = seed
        self.index = base if base is not None else _new_index(ref.dim, factory, ref.metric)
        self.pending: list[np.ndarray] = []  # raw rows: for training, or for vectors.npy
        self.kept: np.ndarray | None = None  # the raw rows, when reserved: filled in place of pending
        self.filled = 0
        self.storage: np.ndarray | None = None  # a reserved Flat index's codes, as rows
        self.raw: np.ndarray | None = None  # every raw row, once gathered (vectors.npy's content)
        self._completing = threading.Lock()
        self._completed: bool | BaseException | None = None  # True, or what completing raised
        self.keep_raw = not _stores_vectors(self.index)
        self.rescaler = _Rescaler() if ref.metric == "cosine" and not self.keep_raw else None
        self.flat_file: FlatFile | None = None  # a new Flat index's file, written as the rows come
        self.image: atomic.Image | None = None  # vectors.npy's bytes, when reserved: its header, then ``kept``
        self._scratch: np.ndarray | None = None  # where a reader puts a chunk bound for flat_file
        self.spool: Path | None = None  # where a file with no name goes (write_ahead), else the staging directory

    def write_ahead(self, directory: Path) -> None:
        """Write no file of the store: a file streamed as the rows come has no name (on ``directory``'s file
        system) until ``finish`` links it into the staging directory (a build ahead of validation)."""
        self.spool = directory

    def adds_quickly(self) -> bool:
        """Whether ``add`` only keeps or copies the rows (a Flat index, or an index to train: the work
        comes in ``complete``), so that rows are added as fast as they are read."""
        return ((self.keep_raw and not self.index.is_trained)
                or type(self.index) in _FLAT_TYPES)

    def reserve(self, n: int) -> None:
        """Size the storage for ``n`` more rows at once (a growing buffer would copy itself as it doubles)."""
        if self.keep_raw:
            if not self.pending and self.kept is None:
                self.kept = self._vectors_image(n) if n > 0 and npy_file_ready() else None
                if self.kept is None:
                    self.kept = np.empty((n, self.ref.dim), dtype=np.float32)
            return
        flat = self.index  # index_factory's object is of the concrete class already (and owns the index)
        if type(flat) not in _FLAT_TYPES or flat.ntotal or n <= 0:
            return
        if self.flat_file is None and self.storage is None and flat_file_ready():
            self.flat_file = self._open_flat_file(flat.metric_type)
            if self.flat_file is not None:
                return
        flat.codes.resize(n * flat.code_size)
        self.storage = faiss.rev_swig_ptr(flat.codes.data(), n * flat.code_size).view(np.float32).reshape(
            n, self.ref.dim)

    def _open_flat_file(self, metric_type: int) -> FlatFile | None:
        if self.spool is not None:
            return FlatFile.nameless(self.spool, self.ref.dim, metric_type)
        location = self.ref.location
        assert location is not None
        atomic.make_dirs(location)
        return FlatFile.create(location / INDEX_FILE, self.ref.dim, metric_type)

    def _vectors_image(self, n: int) -> np.ndarray:
        """Room for ``n`` raw rows inside vectors.npy's bytes as they will be on disk (``image``, page
        aligned): finish writes the image with direct I/O (atomic.write_image), from this memory to the
        disk, with no copy into the page cache, which at 1M rows took 1.4-3.4 s of CPU from training."""
        header = npy_header(n, self.ref.dim)
        self.image = atomic.new_image(len(header) + n * self.ref.dim * 4)
        self.image.memory[:len(header)] = header
        return np.frombuffer(self.image.memory, np.float32, n * self.ref.dim, len(header)).reshape(n, self.ref.dim)

    def add(self, vectors: np.ndarray, *, ids: Sequence[str] | None = None,
            content_hashes: Sequence[str] | None = None) -> None:
        del ids, content_hashes  # the store's ids.json/hashes.json are the record for FAISS
        if vectors.ndim != 2 or vectors.shape[1] != self.ref.dim:
            raise InvalidInput(f"vectors of shape {vectors.shape} for a {self.ref.dim}-dimensional index",
                               field="spec.model.dim", value=self.ref.dim)
        raw = np.ascontiguousarray(vectors, dtype=np.float32)
        if self.keep_raw:
            self._keep(raw)
        if not self.index.is_trained:
            return  # added in finish, after training on every row
        for start in range(0, raw.shape[0], ADD_CHUNK):
            self._add_chunk(raw[start:start + ADD_CHUNK])

    def slot(self, n: int) -> np.ndarray | None:
        """Where a reader puts the next ``n`` rows before ``add``-ing them: their place among the kept
        rows (no copy then), or a buffer reused chunk after chunk for rows bound for a file."""
        if self.kept is not None and self.filled + n <= self.kept.shape[0]:
            return self.kept[self.filled:self.filled + n]
        if self.flat_file is None:
            return None
        if self._scratch is None or self._scratch.shape[0] < n:
            self._scratch = np.empty((n, self.ref.dim), dtype=np.float32)
        return self._scratch[:n]

    def _keep(self, raw: np.ndarray) -> None:
        if self.kept is not None and self.filled + raw.shape[0] <= self.kept.shape[0]:
            place = self.kept[self.filled:self.filled + raw.shape[0]]
            if place.ctypes.data != raw.ctypes.data:  # not read into its slot already
                place[...] = raw
        else:
            if self.kept is not None:  # more rows than reserved: keep them as chunks after all
                self.pending.append(self.kept[:self.filled])
                self.kept = None
            self.pending.append(raw)
        self.filled += raw.shape[0]

    def _add_chunk(self, raw: np.ndarray) -> None:
        prepared = _unit(raw, self.ref.metric)
        if self.rescaler is not None:
            self.rescaler.record(raw, prepared)
        if self.flat_file is not None:
            self.flat_file.append(prepared)  # the bytes IndexFlat.add would store
            return
        ntotal = self.index.ntotal
        if self.storage is not None and ntotal + raw.shape[0] <= self.storage.shape[0]:
            self.storage[ntotal:ntotal + raw.shape[0]] = prepared  # what IndexFlat.add does, into the reserve
            self.index.ntotal = ntotal + raw.shape[0]
            return
        self._trim()
        self.index.add(prepared)

    def _trim(self) -> None:
        """The reserved storage cut to the rows added (FAISS writes the whole code buffer)."""
        if self.storage is not None:
            self.index.codes.resize(self.index.ntotal * self.index.code_size)
            self.storage = None

    def gather(self) -> None:
        """Every raw row as one array (``raw``), as training and vectors.npy take them; once."""
        if self.raw is not None:
            return
        self._trim()
        self._scratch = None
        if self.image is not None and (self.kept is None or self.filled != self.kept.shape[0]):
            self.image = None  # not every row it has room for: vectors.npy is written from ``raw``
        self.raw = self.kept[:self.filled] if self.kept is not None else _joined(self.pending, self.ref.dim)
        self.pending, self.kept = [], None

    def complete(self) -> None:
        """Train (a factory that learns) and add every kept row: the index whole, in memory, nothing
        written (a streamed Flat file is sealed: its header, fsync). Once: a second call (``finish``
        after a build ahead) waits for the first, and raises what it raised."""
        with self._completing:
            if self._completed is not None:
                if self._completed is not True:
                    raise self._completed
                return
            try:
                self.gather()
                raw = self.raw
                assert raw is not None
                if not self.index.is_trained:
                    prepared = _unit(raw, self.ref.metric)
                    _train(self.index, prepared, self.factory, self.seed)
                    if prepared is raw and self.rescaler is None:  # every row unit: every chunk as given, unchecked
                        for start in range(0, raw.shape[0], ADD_CHUNK):
                            self.index.add(prepared[start:start + ADD_CHUNK])
                    else:
                        for start in range(0, raw.shape[0], ADD_CHUNK):
                            self._add_chunk(raw[start:start + ADD_CHUNK])
                if self.flat_file is not None:
                    self.flat_file.seal()
            except BaseException as exc:
                self._completed = exc
                raise
            self._completed = True

    def finish(self) -> None:
        location = self.ref.location
        assert location is not None
        atomic.make_dirs(location)
        self.gather()
        if self.keep_raw:  # the index holds no exact copy: drift and rebuilds read this one
            # written (temp name, fsync) on a second thread while FAISS trains and adds, which let go of the GIL
            # (an error of completing waits for the write to end, and is the one reported; abort removes the file)
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="write-vectors") as pool:
                written = (pool.submit(atomic.write_image, location / VECTORS_FILE, self.image)
                           if self.image is not None else
                           pool.submit(atomic.write_npy, location / VECTORS_FILE, self.raw))
                self.complete()
            written.result()
            self.image = None
        else:
            self.complete()
            if self.rescaler is not None:
                self.rescaler.write(location)
        self.raw = None
        if self.flat_file is not None:
            self.flat_file.place(location / INDEX_FILE)
            self.flat_file = None
            return
        atomic.write_with(location / INDEX_FILE, lambda path: faiss.write_index(self.index, str(path)))

    def abort(self) -> None:
        self.pending, self.kept, self.storage, self.raw, self._scratch, self.image = [], None, None, None, None, None
        if self.flat_file is not None:
            self.flat_file.close()
            self.flat_file = None
        if self.ref.location is not None:
            for name in OWN_FILES:
                path = self.ref.location / name
                if path.exists():
                    atomic.remove_file(path)


def _joined(chunks: list[np.ndarray], dim: int) -> np.ndarray:
    """The chunks as one array; without a copy when they are consecutive slices of one array.

    Otherwise each chunk is dropped as soon as it is copied, so the chunks and the joined array
    never both hold every row.
    """
    if not chunks:
        return np.zeros((0, dim), np.float32)
    if len(chunks) == 1:
        return chunks[0]
    base = chunks[0].base
    if isinstance(base, np.ndarray) and base.dtype == np.float32 and base.ndim == 2 and base.flags.c_contiguous:
        start = base.__array_interface__["data"][0]
        expected = start
        for chunk in chunks:
            if chunk.base is not base or chunk.__array_interface__["data"][0] != expected:
                break
            expected += chunk.nbytes
        else:
            if expected == start + base.nbytes:
                return base  # the caller's whole array, added in slices
    out = np.empty((sum(c.shape[0] for c in chunks), dim), dtype=np.float32)
    row = 0
    chunks.reverse()
    while chunks:
        chunk = chunks.pop()
        out[row:row + chunk.shape[0]] = chunk
        row += chunk.shape[0]
    return out


def _train(index: faiss.Index, data: np.ndarray, factory: str, seed: int) -> None:
    try:
        faiss.extract_index_ivf(index).cp.seed = seed
    except RuntimeError:
        pass  # not an IVF index: nothing to seed
    try:
        index.train(data)
    except RuntimeError as exc:
        raise InvalidInput(
            f"FAISS could not train {factory!r} on {data.shape[0]} vectors: "
            f"{str(exc).strip().splitlines()[-1]} (use fewer lists/centroids or a Flat/HNSW index)",
            field=FACTORY_FIELD, value=factory) from exc


class FaissVersion:
    """A finished version: the index (memory-mapped where FAISS can), searched in place."""

    def __init__(self, ref: VersionRef, index: faiss.Index, mmapped: bool) -> None:
        self.ref = ref
        self.index = index
        self.mmapped = mmapped
        self._exact: faiss.Index | None = None
        self._rows = int(index.ntotal)  # a finished version never changes (opened read-only)
        self._negate = ref.metric == "l2"  # FAISS: smaller L2 is better; every result here: higher
        if index.d != ref.dim:  # search_row hands FAISS a pointer to ref.dim floats: they must agree
            raise StoreError(f"{ref.index}/{ref.version}: the FAISS index has dimension {index.d}, "
                             f"the version's meta says {ref.dim}")
        # FAISS's own search under its Python `search` wrapper, whose shape checks, conversions and
        # allocations search_row does not need (their callers guarantee them)
        self._search_c = index.search_c

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return _search(self.index, queries, k, self.ref.metric)

    def search_row(self, query: np.ndarray, k: int) -> tuple[list[float], list[int]]:
        """`search` for the serving path (RowSearch; the caller prepared the query): the same FAISS
        call, without the padding to k and the -1 scan, numpy calls made just after the search has
        pushed numpy's code out of the CPU cache (several microseconds each there)."""
        got = k if k < self._rows else self._rows
        if got <= 0:
            return [], []
        scores, rows = np.empty(got, _F32), np.empty(got, _I64)  # flat: tolist() gives the lists at once
        self._search_c(1, swig_ptr(query), got, swig_ptr(scores), swig_ptr(rows), None)
        if self._negate:
            return [-s for s in scores.tolist()], rows.tolist()
        return scores.tolist(), rows.tolist()

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if isinstance(faiss.downcast_index(self.index), faiss.IndexFlat):
            return self.search(queries, k)  # a Flat index is brute force already
        if self._exact is None:
            flat = _new_index(self.ref.dim, "Flat", self.ref.metric)
            vectors = self.vectors()
            for start in range(0, vectors.shape[0], ADD_CHUNK):
                flat.add(_prepare(vectors[start:start + ADD_CHUNK], self.ref.metric))
            self._exact = flat
        return _search(self._exact, queries, k, self.ref.metric)

    def count(self) -> int:
        return int(self.index.ntotal)

    def vectors(self) -> np.ndarray:
        assert self.ref.location is not None
        return _raw_vectors(self.index, self.ref.location, self.ref.metric, self.ref.dim)

    def trained_index(self) -> faiss.Index:
        """A private copy of the index (reading it fully: a memory map cannot be reset and refilled)."""
        return faiss.read_index(str(self.ref.location / INDEX_FILE))

    def close(self) -> None:
        self.index = None  # type: ignore[assignment]
        self._exact = None


def _raw_vectors(index: faiss.Index, location: Path, metric: Metric, dim: int, prefix: str = "") -> np.ndarray:
    """The rows as added: vectors.npy when kept, else read back from the index (and rescaled)."""
    if (location / (prefix + VECTORS_FILE)).is_file():
        return np.load(location / (prefix + VECTORS_FILE), mmap_mode="r")
    stored = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, dim), np.float32)
    if metric != "cosine":
        return stored
    raw = restore(stored, np.load(location / (prefix + NORMS_FILE)))
    with np.load(location / (prefix + FIXUPS_FILE)) as fixups:
        raw.reshape(-1)[fixups["positions"]] = fixups["values"]
    return raw


class SharedVersion:
    """A revision: the rows it shares with a full version, plus its own changed rows."""

    def __init__(self, ref: VersionRef, base: faiss.Index, delta: faiss.Index, rows: np.ndarray,
                 mmapped: bool) -> None:
        self.ref = ref
        self.base = base
        self.index = delta
        self.rows = rows
        self.mmapped = mmapped
        shared = np.flatnonzero(rows >= 0)
        self.from_base = np.full(base.ntotal, -1, dtype=np.int64)  # base row -> row of this version
        self.from_base[rows[shared]] = shared
        self.from_delta = np.flatnonzero(rows < 0)  # delta row j is the j-th row stored here
        used = np.zeros(base.ntotal, dtype=np.uint8)
        used[rows[shared]] = 1
        self._bitmap = np.packbits(used, bitorder="little")  # kept alive: the selector points into it
        self._params = faiss.SearchParameters(sel=faiss.IDSelectorBitmap(base.ntotal, faiss.swig_ptr(self._bitmap)))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        metric = self.ref.metric
        bs, br = _search(self.base, queries, k, metric, self._params)
        ds, dr = _search(self.index, queries, k, metric)
        rows = np.concatenate([_mapped(br, self.from_base), _mapped(dr, self.from_delta)], axis=1)
        scores = np.concatenate([bs, ds], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(rows, order, axis=1)

    def exact_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.search(queries, k)  # both parts are Flat: brute force already

    def count(self) -> int:
        return int(self.rows.shape[0])

    def vectors(self) -> np.ndarray:
        location = self.ref.location
        assert location is not None
        out = np.empty((self.count(), self.ref.dim), dtype=np.float32)
        shared = self.rows >= 0
        base = _raw_vectors(self.base, location, self.ref.metric, self.ref.dim, prefix=BASE)
        out[shared] = base[self.rows[shared]]
        out[~shared] = _raw_vectors(self.index, location, self.ref.metric, self.ref.dim)[-self.rows[~shared] - 1]
        return out

    def close(self) -> None:
        self.base = self.index = None  # type: ignore[assignment]


def _mapped(rows: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[rows]`` where rows >= 0, -1 (padding) elsewhere."""
    out = np.full(rows.shape, -1, dtype=np.int64)
    found = rows >= 0
    out[found] = table[rows[found]]
    return out


class SharingWriter:
    """Writes a revision: links the full version's files, keeps only the changed rows itself."""

    def __init__(self, ref: VersionRef, root: dict[str, Path], root_rows: np.ndarray) -> None:
        assert ref.location is not None
        self.ref = ref
        self.root = root  # file name -> the full version's file the shared rows are in
        self.root_rows = root_rows  # per row: its row in the full index, -1 to store here
        self.delta = FaissWriter(ref, "Flat")
        self.offset = 0

    def add(self, vectors: np.ndarray, *, ids: Sequence[str] | None = None,
            content_hashes: Sequence[str] | None = None) -> None:
        del ids, content_hashes  # the store's ids.json/hashes.json are the record for FAISS
        n = vectors.shape[0]
        own = self.root_rows[self.offset:self.offset + n] < 0
        self.offset += n
        if own.any():
            self.delta.add(np.ascontiguousarray(vectors[own]))

    def finish(self) -> None:
        location = self.ref.location
        assert location is not None
        if self.offset != self.root_rows.shape[0]:
            raise StoreError(f"{self.ref.index}/{self.ref.version}: {self.offset} rows added, "
                             f"{self.root_rows.shape[0]} expected")
        self.delta.finish()
        own = self.root_rows < 0
        rows = self.root_rows.copy()
        rows[own] = -np.arange(1, int(own.sum()) + 1)
        atomic.write_npy(location / ROWS_FILE, rows)
        for name, src in self.root.items():
            if src.is_file():
                _link(src, location / (BASE + name))

    def abort(self) -> None:
        self.delta.abort()


def _link(src: Path, dst: Path) -> None:
    """A hard link (no bytes): versions are immutable, so sharing a file is safe; a copy across devices."""
    atomic.before_write("write", dst)
    try:
        os.link(src, dst)
    except OSError:
        atomic.copy_file(src, dst)


def _root_rows(location: Path, base_rows: np.ndarray) -> np.ndarray | None:
    """Each row's row in the full index behind ``location`` (-1: not there), or None if it has none."""
    if (location / ROWS_FILE).is_file():  # the base is a revision itself: share its full version
        base_map = np.load(location / ROWS_FILE)
        found = base_rows >= 0
        out = np.full(base_rows.shape[0], -1, dtype=np.int64)
        out[found] = base_map[base_rows[found]]
        return np.where(out >= 0, out, -1)
    index_file = location / INDEX_FILE
    if not index_file.is_file() or (location / VECTORS_FILE).is_file():
        return None
    return np.asarray(base_rows, dtype=np.int64)


def _update_blocker(index: faiss.Index, factory: str) -> str | None:
    """Why FAISS cannot remove rows from this index type in place, or None when it can."""
    if isinstance(faiss.downcast_index(index), faiss.IndexFlatCodes):
        return None
    try:
        faiss.extract_index_ivf(index)
        return None
    except RuntimeError:
        pass
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        return f"FAISS {factory} is an HNSW graph, which cannot remove vectors (IndexHNSW has no remove_ids)"
    return f"FAISS {factory} ({type(faiss.downcast_index(index)).__name__}) cannot remove vectors by id"


def _kept_rows(keep_rows: np.ndarray, ntotal: int) -> np.ndarray:
    keep = np.asarray(keep_rows, dtype=np.int64).reshape(-1)
    if keep.size and (keep[0] < 0 or keep[-1] >= ntotal or (np.diff(keep) <= 0).any()):
        raise StoreError(f"rows to keep must be ascending rows of the base index (0..{ntotal - 1})")
    return keep


def _relabel(invlists: faiss.InvertedLists, old_to_new: np.ndarray) -> None:
    """Every entry's label through ``old_to_new``, in the lists' own memory (no codes touched)."""
    invlists = faiss.downcast_InvertedLists(invlists)
    for list_no in range(invlists.nlist):
        size = invlists.list_size(list_no)
        if size:
            labels = faiss.rev_swig_ptr(invlists.get_ids(list_no), size)
            labels[:] = old_to_new[labels]


def _refreshed_rescaler(base: Path, old_to_new: np.ndarray, keep: np.ndarray, dim: int, raw: np.ndarray,
                        prepared: np.ndarray) -> _Rescaler:
    """The base's norms and fixups of the kept rows (moved to their new rows), then the new rows'."""
    rescaler = _Rescaler()
    rescaler.norms.append(np.load(base / NORMS_FILE)[keep])
    with np.load(base / FIXUPS_FILE) as fixups:
        positions, values = fixups["positions"], fixups["values"]
    rows = old_to_new[positions // dim]
    kept = rows >= 0
    rescaler.positions.append(rows[kept] * dim + positions[kept] % dim)
    rescaler.values.append(values[kept])
    rescaler.offset = keep.shape[0] * dim
    rescaler.record(raw, prepared)
    return rescaler


def _read_index(path: Path) -> tuple[faiss.Index, bool]:
    """Memory-map when the index type supports it, so pages are shared and loading copies nothing.

    IO_FLAG_MMAP_IFC maps the codes of flat-code indexes (Flat, and the storage of HNSW); measured
    here, plain IO_FLAG_MMAP still copies a Flat index into memory. Other types are read normally.
    """
    for flags in (faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY, faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY):
        try:
            return faiss.read_index(str(path), flags), True
        except RuntimeError:
            continue
    try:
        return faiss.read_index(str(path)), False
    except RuntimeError as exc:
        raise StoreError(f"cannot read the FAISS index {path}: {exc}") from exc


class FaissBackend:
    """FAISS files in the store's version directories; the store's routing record is the alias."""

    type: ClassVar[str] = "faiss"
    capabilities: ClassVar[Capabilities] = Capabilities(in_place_update=True, reusable_training=True,
                                                        exact=False, shares_rows=True, native_alias=False,
                                                        builds_in_memory=True)

    def validate(self, settings: BackendSettings, dim: int, metric: Metric) -> None:
        unknown = sorted(set(settings.params) - set(PARAMS))
        if unknown:
            raise InvalidInput(f"the faiss backend takes no parameter {unknown[0]!r} (known: "
                               f"{', '.join(PARAMS)}; spec.index.factory is the same as factory)",
                               field=f"spec.index.backend.{unknown[0]}", value=settings.params[unknown[0]])
        factory = settings.params.get("factory", "Flat")
        if not isinstance(factory, str) or not factory.strip():
            raise InvalidInput("factory must be a non-empty index_factory string", field=FACTORY_FIELD,
                               value=factory)
        _new_index(dim, factory, metric)

    def health(self) -> None:
        return None  # files on the local disk: the store reports its own I/O errors

    def has_training(self, settings: BackendSettings) -> bool:
        """The built structure learns from the vectors (IVF centroids, PQ codebooks)."""
        return is_trained_factory(factory_of(settings))

    def create_version(self, ref: VersionRef, settings: BackendSettings) -> FaissWriter:
        return FaissWriter(ref, factory_of(settings))

    def create_version_on_trained(self, ref: VersionRef, settings: BackendSettings,
                                  reference: VersionRef) -> FaissWriter:
        """A writer refilling the reference's trained structure: centroids/codebooks kept, no k-means.

        ``reset()`` removes the stored vectors of IVF / PQ / pre-transform indexes and keeps what was
        trained, so row i is again document i of the new corpus.
        """
        factory = factory_of(settings)
        if not is_trained_factory(factory):
            raise InvalidInput(f"{factory} has nothing trained to reuse", field=FACTORY_FIELD, value=factory)
        opened = self.open_version(reference)
        try:
            index = opened.trained_index()
        finally:
            opened.close()
        index.reset()
        return FaissWriter(ref, factory, base=index)

    def create_version_sharing(self, ref: VersionRef, settings: BackendSettings, base: VersionRef,
                               base_rows: np.ndarray) -> FaissWriter | SharingWriter:
        """A revision of a Flat version that stores only its new rows; else an ordinary writer."""
        plain = self.create_version(ref, settings)
        if (factory_of(settings).strip() != "Flat" or base.location is None or ref.location is None
                or (base.metric, base.dim) != (ref.metric, ref.dim)):
            return plain
        root_rows = _root_rows(base.location, np.asarray(base_rows))
        if root_rows is None or (root_rows < 0).mean() > MAX_SHARED_DELTA:
            return plain
        # a base that is a revision itself holds the full version's files as its base-* links
        prefix = BASE if (base.location / ROWS_FILE).is_file() else ""
        return SharingWriter(ref, {name: base.location / (prefix + name) for name in (INDEX_FILE, NORMS_FILE,
                                                                                      FIXUPS_FILE)}, root_rows)

    def in_place_blocker(self, settings: BackendSettings, base: VersionRef) -> str | None:
        """Flat-code indexes (Flat, SQ, PQ) and IVF indexes remove and add rows; graphs cannot."""
        factory = factory_of(settings)
        why = _update_blocker(_new_index(base.dim, factory, base.metric), factory)
        if why is not None:
            return why
        if base.location is None or not (base.location / INDEX_FILE).is_file():
            return f"{base.version} has no FAISS index file to start from"
        if (base.location / ROWS_FILE).is_file():
            return (f"{base.version} is a revision sharing rows with an earlier version (docs/backends.md): "
                    "it is rebuilt once as a full index, which later refreshes update in place")
        return None

    def refresh_version(self, ref: VersionRef, settings: BackendSettings, base: VersionRef,
                        keep_rows: np.ndarray, vectors: np.ndarray, *, ids: Sequence[str],
                        content_hashes: Sequence[str]) -> None:
        """A private copy of ``base``'s index with rows removed and added, written into ``ref.location``.

        ``base``'s files are only read: the new files go into the store's staging directory, which the
        store renames into place (so the serving files are never changed on disk, and an interrupted
        refresh leaves a staging directory that recovery removes).
        """
        del ids, content_hashes  # the store's ids.json/hashes.json are the record for FAISS
        assert ref.location is not None and base.location is not None
        why = self.in_place_blocker(settings, base)
        if why is not None:
            raise StoreError(f"{ref.index}/{ref.version}: cannot refresh {base.version} in place: {why}")
        raw = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, ref.dim)
        index = faiss.read_index(str(base.location / INDEX_FILE))  # read fully: a memory map is read-only
        keep = _kept_rows(keep_rows, int(index.ntotal))
        old_to_new = np.full(int(index.ntotal), -1, dtype=np.int64)
        old_to_new[keep] = np.arange(keep.shape[0])
        removed = np.flatnonzero(old_to_new < 0)
        if removed.size:
            index.remove_ids(faiss.IDSelectorBatch(removed))
        prepared = _unit(raw, ref.metric)  # as the writer indexes them, so a refresh equals a build
        try:
            ivf = faiss.extract_index_ivf(index)
        except RuntimeError:
            ivf = None  # flat codes: remove_ids compacted the rows in order, add appends
        if ivf is not None:  # inverted lists keep each entry's label: renumber the kept ones to 0..k-1
            _relabel(ivf.invlists, old_to_new)
            index.add_with_ids(prepared, np.arange(keep.shape[0], keep.shape[0] + raw.shape[0], dtype=np.int64))
        else:
            index.add(prepared)
        atomic.make_dirs(ref.location)
        if not _stores_vectors(index):  # the index holds no exact copy: vectors.npy does
            old = np.load(base.location / VECTORS_FILE, mmap_mode="r")
            atomic.write_npy(ref.location / VECTORS_FILE, np.concatenate([old[keep], raw]))
        elif ref.metric == "cosine":
            _refreshed_rescaler(base.location, old_to_new, keep, ref.dim, raw, prepared).write(ref.location)
        atomic.write_with(ref.location / INDEX_FILE, lambda path: faiss.write_index(index, str(path)))

    def open_version(self, ref: VersionRef) -> FaissVersion | SharedVersion:
        if ref.location is None or not (ref.location / INDEX_FILE).is_file():
            raise NotFound(f"{ref.index}/{ref.version} has no FAISS index"
                           + (f" at {ref.location / INDEX_FILE}" if ref.location is not None else ""))
        index, mmapped = _read_index(ref.location / INDEX_FILE)
        if (ref.location / ROWS_FILE).is_file():
            base, _ = _read_index(ref.location / (BASE + INDEX_FILE))
            return SharedVersion(ref, base, index, np.load(ref.location / ROWS_FILE), mmapped)
        return FaissVersion(ref, index, mmapped)

    def delete_version(self, ref: VersionRef) -> None:
        """The store renames the version directory away and removes it; only stray files remain here."""
        if ref.location is None or not ref.location.is_dir():
            return
        for name in OWN_FILES:
            path = ref.location / name
            if path.exists():
                atomic.remove_file(path)

    def list_versions(self, index: str) -> list[str]:
        return []  # a partial build is the store's staging directory, removed by its recovery

    def get_alias(self, index: str) -> str | None:
        return None  # the store's routing.json is the alias

    def set_alias(self, index: str, version: str | None) -> None:
        return None
