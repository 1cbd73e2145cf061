"""A first version's index built in memory while its inputs are still being validated.

Validating a large corpus (parse, duplicate ids, SHA-256 of every input) is pure Python and holds
the GIL; adding vectors to an index and training it run in the vector library, which lets go of it.
So when the inputs of a store's first version of an index are validated, the rows are read from the
precomputed vectors and put into an index on a second thread at the same time. Nothing of the store
is written there: the index lives in memory until the build, under the store lock and after every
check has passed, takes it (``take``) and writes it into the staging directory as it would have
written an index it had built itself. A writer that streams its file as the rows come (the embedded
backend's Flat index) is told ``write_ahead(directory)``: its file then has no name (Linux
O_TMPFILE, on the store's file system) until the build links it into the staging directory, so the
disk writes it while the corpus is still parsed, and a crash or a dropped build frees it without a
trace. A failed validation, another plan or different inputs drop it (``drop``); an error on the
second thread is never reported from there: the build then does the work in its own turn and reports
what it finds, as it always did.

Only where the result cannot differ from the build's own: a backend that builds in memory
(``Capabilities.builds_in_memory``), precomputed vectors with no ``options.ids`` (row i is document
i), an index with no version yet (nothing to reuse rows or training from). The rows go through the
same reader, chunks and writer calls as the build's, so the index is the same, bit for bit.
"""

from __future__ import annotations

import os
import sys
import threading
from contextlib import contextmanager
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from controller.backends import get_backend
from controller.backends.base import VersionRef
from controller.embed.precomputed import PrecomputedEmbedder, StreamedRows
from controller.engine import backend as B
from controller.manifest.load import LoadedManifest
from controller.progress import Progress, silent
from controller.store import signature
from controller.store.fs import Store

ADD_CHUNK = 8_192  # rows per writer.add: a chunk (12 MB at 384-d) stays in the CPU cache while it is
# read from the memory map, normalised, checked and copied into the index


def add_rows(writer: Any, vectors: Any, ids: Sequence[str] | None, hashes: Sequence[str] | None,
             progress: Progress = silent, chunk: int | None = None, stop: threading.Event | None = None) -> bool:
    """Rows in order, in chunks, so a backend can stream them (and the bar moves); False when ``stop``
    was set before the last chunk.

    A writer with ``reserve`` is told the row count first, so its storage is sized once; one that
    offers a ``slot`` for the next rows gets them read straight into it, from a source that can
    (``read_into``), and added from there.
    """
    n = vectors.shape[0]
    chunk = chunk or ADD_CHUNK
    reserve = getattr(writer, "reserve", None)
    if reserve is not None:
        reserve(n)
    for start in range(0, n, chunk):
        if stop is not None and stop.is_set():
            return False
        end = min(start + chunk, n)
        writer.add(_chunk(writer, vectors, start, end), ids=None if ids is None else ids[start:end],
                   content_hashes=None if hashes is None else hashes[start:end])
        progress(min(end, n), n)
    return True


def _chunk(writer: Any, vectors: Any, start: int, end: int) -> Any:
    """Rows start..end: read into the writer's own storage where both sides can, else sliced."""
    read_into = getattr(vectors, "read_into", None)
    slot = getattr(writer, "slot", None)
    into = slot(end - start) if read_into is not None and slot is not None else None
    return vectors[start:end] if into is None else read_into(into, start)


@dataclass
class _Ahead:
    digest: str  # the manifest it was started for
    inputs: dict[str, Any]  # the stat signature its validation took (content hashes added when done)
    rows: int
    future: Future
    stop: threading.Event
    # the writer the thread made, and whether the thread has ended: under ``lock``, so that exactly one
    # side lets go of a writer no build takes (its file with no name, its rows)
    writer: Any = None
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    # set when validation has ended (passed or not): training waits for it (see ``validating``)
    validated: threading.Event = field(default_factory=threading.Event)
    # the vectors file's sha256 once every row was read and found finite, else None (``rows_read``)
    read: Future = field(default_factory=Future)


_AHEAD: dict[str, _Ahead] = {}

#: the GIL's hand-over interval while validation runs beside a build ahead (Python's default is 5 ms):
#: between two numpy calls the second thread waits for the GIL the parse holds, up to one interval
#: each time; at 1M rows that waiting doubled the time to read the rows an IVF index trains on
SWITCH_INTERVAL_S = 0.0005
_switch = {"depth": 0, "before": 0.0}
_switch_lock = threading.Lock()


@contextmanager
def validating(name: str) -> Iterator[None]:
    """The body validates ``name``'s inputs beside its build ahead: the GIL is handed over every
    SWITCH_INTERVAL_S meanwhile, and the build ahead trains only once the body has ended.

    Reading the rows overlaps the parse well (numpy and preadv let go of the GIL). Training does
    not: the vector library's threads take every core, and each of its parallel steps then waits
    for the thread that shares a core with the parse. At 1M rows on 2 cores, training beside the
    parse cost 4.5 s more CPU than it saved, against 22 s of training alone.
    """
    entry = _AHEAD.get(name)
    if entry is None:
        yield
        return
    with _switch_lock:
        if _switch["depth"] == 0:
            _switch["before"] = sys.getswitchinterval()
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        _switch["depth"] += 1
    try:
        yield
    finally:
        entry.validated.set()
        with _switch_lock:
            _switch["depth"] -= 1
            if _switch["depth"] == 0:
                sys.setswitchinterval(_switch["before"])


def start(loaded: LoadedManifest, store: Store, inputs: dict[str, Any], embedder: Any) -> None:
    """Begin building the first version's index in memory, when the result is sure to be the build's."""
    drop(loaded.name)
    rows = _rows_source(loaded, store, embedder)
    if rows is None:
        return
    spec = loaded.manifest.spec
    settings = B.settings_of(spec)
    # a placeholder location: the writer writes nothing until the build gives it the staging directory
    ref = B.new_version_ref(loaded.name, spec.index.version, spec, Path(os.devnull))
    entry = _Ahead(loaded.digest, inputs, len(rows), Future(), threading.Event())
    spool = _existing_parent(store.index_dir(loaded.name))

    def build() -> None:
        try:
            _build(entry, lambda: get_backend(settings.type).create_version(ref, settings), rows, spool)
        finally:
            if not entry.read.done():  # whatever stopped the thread: validation reads the file itself
                entry.read.set_result(None)
            with entry.lock:
                entry.ended = True
                if entry.stop.is_set() and entry.writer is not None:
                    entry.writer.abort()

    _AHEAD[loaded.name] = entry
    threading.Thread(target=build, name="build-ahead", daemon=True).start()


def _build(entry: _Ahead, create: Any, rows: StreamedRows, spool: Path) -> None:
    """The second thread's work: every row added, handed over, then completed (trained, sealed)."""
    future, stop = entry.future, entry.stop
    if not future.set_running_or_notify_cancel():
        return
    try:
        writer = entry.writer = create()
        write_ahead = getattr(writer, "write_ahead", None)
        if write_ahead is not None:  # a file it streams has no name until the build links it in
            write_ahead(spool)
        if getattr(writer, "adds_quickly", lambda: False)():  # reading ends soon: validation may wait for it
            rows.hash_as_read()
        else:  # an index built as the rows come (HNSW): validation must not wait for the whole build
            entry.read.set_result(None)
        try:
            added = add_rows(writer, rows, None, None, stop=stop)
        finally:
            digest = rows.file_digest()
        if not added or stop.is_set():
            future.set_result(None)
            stop.set()  # no build takes it: let go of it
            return
        if not entry.read.done():
            entry.read.set_result(digest)
        writer.gather()
    except BaseException as exc:  # the build finds it again in its turn and reports it there
        stop.set()
        future.set_exception(exc)
        return
    # handed over with every row in: the build writes the rows (vectors.npy) while this trains and
    # adds; its finish waits for this, and raises what this raised, as a build in turn would
    future.set_result(writer)
    entry.validated.wait()
    if not stop.is_set():
        try:
            writer.complete()
        except BaseException:
            pass  # kept by the writer: finish raises it


def _existing_parent(path: Path) -> Path:
    """The nearest directory that exists on the way to ``path``: the file system the version will be on."""
    while not path.is_dir() and path.parent != path:
        path = path.parent
    return path


def _rows_source(loaded: LoadedManifest, store: Store, embedder: Any) -> StreamedRows | None:
    """The rows a build ahead reads, when it gives exactly what the build would; else None."""
    spec = loaded.manifest.spec
    if not isinstance(embedder, PrecomputedEmbedder) or spec.suspend:
        return None
    if store.index_dir(loaded.name).exists():  # an earlier version to reuse rows or training from
        return None
    try:
        if not get_backend(B.settings_of(spec).type).capabilities.builds_in_memory:
            return None
        return embedder.file_rows()
    except Exception:  # validation says what is wrong, in its own order
        return None


def rows_read(name: str) -> Future | None:
    """The vectors file's sha256 as ``name``'s build ahead read it, every row found finite (None: it did
    not get there, and validation reads the file itself); None when no build ahead runs."""
    entry = _AHEAD.get(name)
    return None if entry is None else entry.read


def take(loaded: LoadedManifest, inputs: dict[str, Any] | None, ref: VersionRef, rows: int) -> Any | None:
    """The writer holding every row (the index complete, or being completed: its ``finish`` waits),
    for a build of ``ref`` from the same inputs.

    Waits for the second thread to have added the rows. None (nothing to take, or built from anything
    else, or reading the rows failed): the caller builds as it always did.
    """
    entry = _AHEAD.pop(loaded.name, None)
    if entry is None:
        return None
    same = (entry.digest == loaded.digest and entry.rows == rows and inputs is not None
            and signature.vouches(entry.inputs, inputs, loaded.paths))
    if not same:
        _let_go(entry)
        return None
    try:
        writer = entry.future.result()
    except Exception:
        return None
    if writer is None or (writer.ref.dim, writer.ref.metric) != (ref.dim, ref.metric):
        _let_go(entry)
        return None
    writer.ref = ref
    return writer


def drop(name: str) -> None:
    """Let go of a build ahead that no build will take (its thread stops at its next chunk)."""
    entry = _AHEAD.pop(name, None)
    if entry is not None:
        _let_go(entry)


def _let_go(entry: _Ahead) -> None:
    """Stop the thread; its writer is aborted here if the thread has ended, else by the thread as it ends."""
    entry.future.cancel()
    entry.validated.set()  # a thread waiting to train goes on to see ``stop``
    with entry.lock:
        entry.stop.set()
        if entry.ended and entry.writer is not None:
            entry.writer.abort()
            entry.writer = None
