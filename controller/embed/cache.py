"""A content-addressed embedding cache: (model fingerprint, text hash) -> vector.

Layout under the store root:

    cache/<fingerprint key>/fingerprint.json     the full fingerprint, written once
    cache/<fingerprint key>/<writer>.f32         append-only float32 rows, `dim` per row
    cache/<fingerprint key>/<writer>.idx         one 16-hex text hash + newline per row

Every vector lives in the directory of exactly one fingerprint, so the model
stays attached to every stored vector, and a directory whose fingerprint.json
disagrees with the embedder asking for it is refused rather than mixed.

Why this shape: each writer (a reconcile, one `controller embed` worker)
appends to its own pair of files, so concurrent writers never interleave and
need no lock. Rows are written and fsynced before their hashes, so an index
line always points at a complete row; a crash leaves at most a tail of rows
without hashes (ignored) or a torn last hash line (ignored). A writer that
hit an error starts a new pair rather than appending after a gap.

Garbage collection (`collect_garbage`) keeps the entries whose text hash is
used by some kept version of some index with that fingerprint, plus every
file written within a grace period (default one day) so that a batch job
filling the cache for a version not built yet keeps its work. Everything else
is rewritten away: survivors go to a new file (fsynced) before old files are
removed, so a crash mid-collection loses nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from controller.errors import EmbedError, EmbeddingBusy, EmbedInterrupted, StoreError
from controller.progress import Progress, silent
from controller.store import atomic

HASH_LEN = 16                  # hex characters of store.corpus.text_hash
LINE = HASH_LEN + 1            # hash + newline: fixed width, so a row number is a byte offset
ROWS_SUFFIX, INDEX_SUFFIX = ".f32", ".idx"
DEFAULT_GRACE_SECONDS = 24 * 3600
OWNER_LOCK = ".owner.lock"     # flock: who embeds with this model now (EmbeddingCache.owned)
CHUNK = 1024                   # texts per call of an embedder that cannot stream (`chunk_size` overrides):
                               # a kill loses at most one chunk


def fingerprint_dir_name(fingerprint: dict[str, Any]) -> str:
    canonical = json.dumps(fingerprint, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def cache_root(store_root: Path) -> Path:
    return Path(store_root) / "cache"


@dataclass
class CacheStats:
    hits: int = 0      # documents served from the cache
    misses: int = 0    # documents that needed the model
    embedded: int = 0  # distinct texts sent to the model (duplicates in one corpus are embedded once)

    def to_dict(self) -> dict[str, int]:
        return {"hits": self.hits, "misses": self.misses, "embedded": self.embedded}


class EmbeddingCache:
    """The cache directory of one model fingerprint."""

    def __init__(self, root: Path, fingerprint: dict[str, Any]) -> None:
        self.fingerprint = fingerprint
        self.dim = int(fingerprint["dim"])
        self.dir = Path(root) / fingerprint_dir_name(fingerprint)
        self._writer: str | None = None
        self._where: dict[str, tuple[str, int]] | None = None

    @classmethod
    def for_store(cls, store_root: Path, fingerprint: dict[str, Any]) -> EmbeddingCache:
        return cls(cache_root(store_root), fingerprint)

    # ---- reading ---------------------------------------------------------------
    def _check_fingerprint(self) -> None:
        stored = atomic.read_json(self.dir / "fingerprint.json")
        if stored is not None and stored != json.loads(json.dumps(self.fingerprint)):
            raise StoreError(f"refusing to mix vectors of two models: cache directory {self.dir} holds "
                             f"{stored}, not {self.fingerprint}")

    def _index(self) -> dict[str, tuple[str, int]]:
        """text hash -> (file stem, row), over every complete row of every writer."""
        if self._where is None:
            self._check_fingerprint()
            where: dict[str, tuple[str, int]] = {}
            for stem in self._stems():
                for row, text_hash in enumerate(self._hashes(stem)):
                    where.setdefault(text_hash, (stem, row))
            self._where = where
        return self._where

    def _stems(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob(f"*{INDEX_SUFFIX}") if not p.name.startswith("."))

    def _hashes(self, stem: str) -> list[str]:
        """Hashes of complete rows: both the hash line and its row must be whole."""
        data = (self.dir / f"{stem}{INDEX_SUFFIX}").read_bytes()
        rows_path = self.dir / f"{stem}{ROWS_SUFFIX}"
        rows = rows_path.stat().st_size // (4 * self.dim) if rows_path.exists() else 0
        count = min(len(data) // LINE, rows)
        return [data[i * LINE:i * LINE + HASH_LEN].decode("ascii") for i in range(count)]

    def __contains__(self, text_hash: str) -> bool:
        return text_hash in self._index()

    def __len__(self) -> int:
        return len(self._index())

    def has(self, hashes: Sequence[str]) -> np.ndarray:
        """Which hashes have a vector (without reading any)."""
        where = self._index()
        return np.fromiter((h in where for h in hashes), dtype=bool, count=len(hashes))

    def get(self, hashes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(found mask, vectors of the found hashes in order)."""
        where = self._index()
        found = self.has(hashes)
        out = np.zeros((int(found.sum()), self.dim), dtype=np.float32)
        by_stem: dict[str, tuple[list[int], list[int]]] = {}
        for slot, h in enumerate(h for h in hashes if h in where):
            stem, row = where[h]
            slots, rows = by_stem.setdefault(stem, ([], []))
            slots.append(slot)
            rows.append(row)
        for stem, (slots, rows) in by_stem.items():
            out[slots] = self._rows(stem)[rows]
        return found, out

    def _rows(self, stem: str) -> np.ndarray:
        path = self.dir / f"{stem}{ROWS_SUFFIX}"
        count = path.stat().st_size // (4 * self.dim)
        return np.memmap(path, dtype=np.float32, mode="r", shape=(count, self.dim))

    # ---- writing ---------------------------------------------------------------
    def put(self, hashes: Sequence[str], vectors: np.ndarray) -> None:
        """Append rows, fsync, then their hashes, fsync: a hash never points at a partial row."""
        if len(hashes) == 0:
            return
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(hashes), self.dim):
            raise EmbedError(f"cache of {self.dir.name} expects {len(hashes)} x {self.dim} vectors, "
                             f"got {vectors.shape}")
        bad = [h for h in hashes if len(h) != HASH_LEN or not all(c in "0123456789abcdef" for c in h)]
        if bad:
            raise EmbedError(f"not a text hash: {bad[0]!r}")
        self._prepare_dir()
        stem = self._writer or self._new_writer()
        try:
            _append(self.dir / f"{stem}{ROWS_SUFFIX}", vectors.tobytes())
            _append(self.dir / f"{stem}{INDEX_SUFFIX}", "".join(f"{h}\n" for h in hashes).encode("ascii"))
        except BaseException:
            self._writer = None  # never append after a possible gap
            raise
        if self._where is not None:
            start = len(self._hashes(stem)) - len(hashes)
            for i, h in enumerate(hashes):
                self._where.setdefault(h, (stem, start + i))

    @contextmanager
    def owned(self, *, shared: bool, who: str) -> Iterator[None]:
        """Who embeds this model now: batch jobs share the lock, a reconcile that must embed takes it alone.

        flock: released by the kernel when the holder dies, SIGKILL included, so a
        killed job never leaves a stale claim. (Local filesystems; over NFS flock
        may not be shared between hosts, and the operator waits on Job status instead.)
        """
        self._prepare_dir()
        fd = os.open(self.dir / OWNER_LOCK, os.O_RDWR | os.O_CREAT, atomic.file_mode())
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise EmbeddingBusy(
                    f"{who}: another process is embedding with this model now (cache {self.dir}): "
                    + ("a reconcile is embedding; run the job after it" if shared else
                       "`controller embed` owns the work; reconcile after it finishes (its vectors are reused)")
                ) from None
            yield
        finally:
            os.close(fd)

    def _prepare_dir(self) -> None:
        if (self.dir / "fingerprint.json").is_file():
            self._check_fingerprint()
            return
        atomic.make_dirs(self.dir)  # the store's private modes, whatever the umask
        atomic.write_json(self.dir / "fingerprint.json", self.fingerprint)

    def _new_writer(self) -> str:
        self._writer = f"{int(time.time())}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        return self._writer


def _append(path: Path, data: bytes) -> None:
    """Append and fsync; a failure is an OSError naming ``path`` (os.write/os.fsync name no file, and the
    CLI prints "<file>: <reason>" for a full or read-only store volume)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, atomic.file_mode())  # names path itself
    try:
        _append_fd(fd, data)
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        os.close(fd)


def _append_fd(fd: int, data: bytes) -> None:
    start = os.fstat(fd).st_size
    os.fchmod(fd, atomic.file_mode())  # open's mode is filtered by the umask; fchmod is not
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError:
        _cut_back(fd, start)
        raise


def _cut_back(fd: int, size: int) -> None:
    """Drop what a failed append wrote: readers skip a partial row or hash line anyway (_hashes), but on a full
    volume the bytes are better given back. Best effort: the append's own error is the one to report."""
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass


# ---- embedding through the cache ---------------------------------------------------
def query_hash(text: str) -> str:
    """Queries embed differently from documents (prefixes, input_type): their own key space."""
    return hashlib.sha256(b"query\0" + text.encode("utf-8")).hexdigest()[:HASH_LEN]


def embed_through_cache(embedder: Any, cache: EmbeddingCache | None, ids: Sequence[str],
                        texts: Sequence[str], hashes: Sequence[str],
                        progress: Callable[[str], Progress] = lambda label: silent,
                        chunk: int | None = None, queries: bool = False,
                        stop: Callable[[], bool] = lambda: False) -> tuple[np.ndarray, CacheStats]:
    """Vectors for `texts`: cached ones read, the rest embedded and cached as each piece finishes.

    An embedder with `iter_documents` (http) is streamed: every batch is
    appended and fsynced the moment its answer arrives, so a kill loses only
    the batches in flight. Others run in chunks of `chunk_size` texts. A failure
    part-way keeps what was embedded (in the cache, never in a version), so a
    retry starts where this one stopped. Once `stop()` is true nothing new is
    sent, what is in flight is kept, and EmbedInterrupted is raised. Texts
    repeated within one call are embedded once. With `queries`, `hashes` must
    come from query_hash.
    """
    if cache is None:
        vectors = (embedder.embed_queries(ids, texts) if queries
                   else embedder.embed_documents(ids, texts, progress=progress("embedding")))
        _check_shape(vectors, len(texts), embedder)
        return vectors, CacheStats(misses=len(texts), embedded=len(texts))
    found, cached = cache.get(hashes)
    todo, stats = plan_misses(found, hashes)
    out = np.zeros((len(texts), cache.dim), dtype=np.float32)
    out[found] = cached
    bar = progress(f"embedding ({stats.hits} cached, {stats.misses} to embed)") if todo else silent
    done = 0

    def land(rows: range, fresh: np.ndarray) -> None:
        nonlocal done
        out[todo[rows.start:rows.stop]] = fresh
        done += len(rows)

    try:
        embed_into_cache(embedder, cache, [ids[i] for i in todo], [texts[i] for i in todo],
                         [hashes[i] for i in todo], queries=queries, stop=stop,
                         chunk=chunk or getattr(embedder, "chunk_size", CHUNK), bar=bar, on_piece=land)
    except EmbedError as exc:
        raise EmbedError(f"{exc} [{done} of the {len(todo)} texts to embed are cached; "
                         f"a retry resumes there]") from exc
    if done < len(todo):
        raise EmbedInterrupted(f"stopped on request with {done} of the {len(todo)} texts to embed cached "
                               f"(nothing in flight was lost); rerun to resume")
    if todo:  # repeated texts: copy the row of their first occurrence
        first = {hashes[i]: i for i in todo}
        missing = np.flatnonzero(~found)
        out[missing] = out[[first[hashes[i]] for i in missing]]
    return out, stats


def plan_misses(found: np.ndarray, hashes: Sequence[str]) -> tuple[list[int], CacheStats]:
    """(rows to embed, stats) from the cache's found mask: the first row of each distinct uncached text."""
    first: dict[str, int] = {}
    for i in np.flatnonzero(~found):
        first.setdefault(hashes[i], int(i))
    todo = sorted(first.values())
    return todo, CacheStats(hits=int(found.sum()), misses=int((~found).sum()), embedded=len(todo))


def embed_into_cache(embedder: Any, cache: EmbeddingCache, ids: Sequence[str], texts: Sequence[str],
                     hashes: Sequence[str], *, chunk: int, queries: bool = False,
                     stop: Callable[[], bool] = lambda: False, bar: Progress = silent,
                     on_piece: Callable[[range, np.ndarray], None] = lambda rows, vectors: None) -> int:
    """Embed distinct texts the cache lacks, appending each piece as it finishes; returns how many landed.

    Fewer than all when `stop()` turned true (what was in flight still lands).
    `on_piece(rows, vectors)` sees each piece once it is persisted; `bar` moves within pieces too.
    """
    done = 0
    if stop():  # a stream sends its first window before it looks at stop()
        return done
    for offset, fresh in _pieces(embedder, list(ids), list(texts), queries, stop, chunk, bar):
        rows = range(offset, min(offset + len(fresh), len(texts)))
        _check_shape(fresh, len(rows), embedder)
        cache.put(hashes[rows.start:rows.stop], fresh)
        done += len(rows)
        on_piece(rows, fresh)
        bar(done, len(texts))
    return done


def _pieces(embedder: Any, ids: list[str], texts: list[str], queries: bool, stop: Callable[[], bool],
            chunk: int, bar: Progress) -> Iterator[tuple[int, np.ndarray]]:
    """(offset, vectors) as the embedder finishes them: streamed per batch, or per chunk."""
    stream = getattr(embedder, "iter_documents", None)
    if stream is not None and not queries:
        yield from stream(ids, texts, stop)
        return
    for start in range(0, len(texts), chunk):
        if stop():
            return
        part_ids, part_texts = ids[start:start + chunk], texts[start:start + chunk]
        if queries:
            yield start, embedder.embed_queries(part_ids, part_texts)
        else:
            yield start, embedder.embed_documents(part_ids, part_texts,
                                                  progress=lambda d, t, base=start: bar(base + d, len(texts)))


def _check_shape(vectors: np.ndarray, rows: int, embedder: Any) -> None:
    if vectors.ndim != 2 or vectors.shape != (rows, embedder.dim):
        raise EmbedError(f"embedder returned shape {vectors.shape} for {rows} documents "
                         f"(expected {rows} x {embedder.dim})")


# ---- garbage collection -----------------------------------------------------------
def collect_garbage(store_root: Path, referenced: dict[str, set[str]], *,
                    grace_seconds: float = DEFAULT_GRACE_SECONDS, now: float | None = None) -> dict[str, int]:
    """Drop cache entries no kept version uses; `referenced` maps fingerprint dir -> text hashes.

    Files younger than the grace period are kept whole (a running batch job may
    be filling them for a version that does not exist yet).
    """
    now = time.time() if now is None else now
    removed = kept = 0
    root = cache_root(store_root)
    if not root.is_dir():
        return {"removed": 0, "kept": 0}
    for directory in sorted(p for p in root.iterdir() if p.is_dir()):
        fingerprint = atomic.read_json(directory / "fingerprint.json")
        if fingerprint is None:
            continue
        cache = EmbeddingCache(root, fingerprint)
        if cache.dir != directory:
            continue  # not ours (renamed by hand): leave it alone
        used = referenced.get(directory.name, set())
        old = [s for s in cache._stems() if now - _mtime(directory, s) > grace_seconds]
        survivors: dict[str, tuple[str, int]] = {}
        dropped = 0
        for stem in old:
            for row, h in enumerate(cache._hashes(stem)):
                if h in used:
                    survivors.setdefault(h, (stem, row))
                else:
                    dropped += 1
        if not dropped:
            kept += len(survivors)
            continue
        if survivors:
            hashes = list(survivors)
            vectors = np.stack([cache._rows(survivors[h][0])[survivors[h][1]] for h in hashes])
            cache.put(hashes, vectors)
            _touch_back(directory, cache._writer, now - grace_seconds - 1)
        for stem in old:
            for suffix in (INDEX_SUFFIX, ROWS_SUFFIX):  # index first: rows without an index are inert
                (directory / f"{stem}{suffix}").unlink(missing_ok=True)
        atomic.fsync_dir(directory)
        removed += dropped
        kept += len(survivors)
    return {"removed": removed, "kept": kept}


def _mtime(directory: Path, stem: str) -> float:
    return max((directory / f"{stem}{s}").stat().st_mtime for s in (INDEX_SUFFIX, ROWS_SUFFIX)
               if (directory / f"{stem}{s}").exists())


def _touch_back(directory: Path, stem: str | None, when: float) -> None:
    """Compacted survivors are old data: do not let them hide behind the grace period."""
    if stem is None:
        return
    for suffix in (INDEX_SUFFIX, ROWS_SUFFIX):
        os.utime(directory / f"{stem}{suffix}", (when, when))


def referenced_hashes(versions: Iterable[tuple[dict[str, Any], list[str]]]) -> dict[str, set[str]]:
    """fingerprint dir -> text hashes, from (fingerprint, hashes) of every kept version."""
    out: dict[str, set[str]] = {}
    for fingerprint, hashes in versions:
        out.setdefault(fingerprint_dir_name(fingerprint), set()).update(hashes)
    return out
