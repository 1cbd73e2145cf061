"""Stat signatures of input files, so a no-op reconcile need not read them again.

A signature is (size, mtime_ns, ctime_ns, inode, device) per file, taken with the
wall clock just before the stats. The engine records what it learned from the
content (corpus digest, document count, reuse) beside the signature it was
learned under, in <index>/inputs.json; the content is trusted again only when
every signature is the same and every file passes git's racy-timestamp rule:
a file whose mtime is not strictly older than the time the signature was taken
(less RACY_WINDOW_NS, since file systems stamp mtimes with a coarse clock that
can lag the wall clock) might have been written again within the same clock
tick after it was read, so it counts as changed. An atomic save (new inode),
a touch or an in-place edit restoring the old mtime (the ctime moves) is seen
too. Directories are never trusted: their stat says nothing of their files.

When the signature did change (a touch, a checkout, a racy file), the bytes are
hashed and compared with the hashes recorded beside it (taken before the content
was parsed): equal bytes still need no parse, no validation and no vector scan.

A record that still vouches by its stat signature alone is kept as it is (only
its takenNs would move): a no-op reconcile writes nothing and fsyncs nothing.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
import time
from pathlib import Path
from typing import Any, Mapping

from controller.errors import StoreError
from controller.store import atomic

RECORD = "inputs.json"
RACY_WINDOW_NS = 1_000_000_000  # one second, as git's racy rule at second granularity


def take(paths: Mapping[str, Path]) -> dict[str, Any]:
    """{"takenNs": wall clock before the stats, "files": {key: [path, size, mtime_ns, ctime_ns, ino, dev]}}.

    A path that cannot be stat-ed or is not a regular file gets None: never trusted.
    """
    taken = time.time_ns()
    files: dict[str, Any] = {}
    for key, path in sorted(paths.items()):
        try:
            st = os.stat(path)
        except OSError:
            files[key] = None
            continue
        files[key] = ([str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]
                      if stat.S_ISREG(st.st_mode) else None)
    return {"takenNs": taken, "files": files}


def unchanged(recorded: Mapping[str, Any] | None, current: Mapping[str, Any]) -> bool:
    """Whether content learned under `recorded` still holds for the files as `current` sees them."""
    if not recorded or recorded.get("files") != current["files"]:
        return False
    limit = int(recorded["takenNs"]) - RACY_WINDOW_NS
    for entry in current["files"].values():
        if entry is None or entry[2] >= limit:  # racy: modified too close to (or after) the stat
            return False
    return True


def content(paths: Mapping[str, Path]) -> dict[str, str | None]:
    """sha256 of each file's bytes, streamed; None for anything but a readable regular file."""
    out: dict[str, str | None] = {}
    for key, path in sorted(paths.items()):
        out[key] = None
        try:  # O_NONBLOCK: opening a FIFO must not hang (controller.inputs refuses it afterwards)
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            continue
        with os.fdopen(fd, "rb", buffering=0) as handle:
            out[key] = _sha256_of(handle)
    return out


HASH_BLOCK = 1 << 24
MAP_FROM = 1 << 26  # files this large (the vectors) are hashed from a memory map, smaller ones read


def _sha256_of(handle: Any) -> str:
    """sha256 of a file; a large one hashed from a memory map 16 MiB at a time.

    The engine hashes the vectors (gigabytes) on a second thread while the corpus is parsed; the
    update lets go of the GIL, but taking it back between two blocks waits for the parser's switch
    interval (5 ms). hashlib.file_digest's 256 KiB blocks made that wait the hashing's pace (1.5 GB
    was hashed after the parse, not beside it); 16 MiB blocks make it rare. Mapped, not read: no
    copy and no buffer, and each block's pages are let go once hashed (resident memory: one block).
    The embedder maps the same file to read it (a file truncated meanwhile faults either way).
    """
    size = os.fstat(handle.fileno()).st_size
    if size < MAP_FROM:
        return hashlib.file_digest(handle, "sha256").hexdigest()
    digest = hashlib.sha256()
    with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped, memoryview(mapped) as view:
        for start in range(0, len(mapped), HASH_BLOCK):
            digest.update(view[start:start + HASH_BLOCK])
            if hasattr(mmap, "MADV_DONTNEED"):
                mapped.madvise(mmap.MADV_DONTNEED, start, min(HASH_BLOCK, len(mapped) - start))
    return digest.hexdigest()


def vouches(recorded: Mapping[str, Any] | None, current: dict[str, Any], paths: Mapping[str, Path]) -> bool:
    """Whether what was learned under `recorded` holds now: same stat signature (racy rule), else same bytes.

    Fills current["content"] (carried over, or hashed at most once) so it can be recorded in turn.
    """
    if not recorded:
        return False
    if unchanged(recorded, current):
        current.setdefault("content", recorded.get("content"))
        return True
    before = recorded.get("content")
    if not before or [e and e[0] for e in recorded["files"].values()] != [e and e[0] for e in current["files"].values()]:
        return False
    if current.get("content") is None:
        current["content"] = content(paths)
    return None not in current["content"].values() and current["content"] == before


def still_current(recorded: Mapping[str, Any] | None, record: Mapping[str, Any]) -> bool:
    """Whether the stored record may stand for `record`: the same facts, learned under a stat signature
    that still vouches by itself (same files, none racy against its own time, same content hashes).

    Only the time the signature was taken differs then, and rewriting the record to move it would cost
    a write and two fsyncs on every no-op. A record that vouched only through its content hashes, or
    whose files were racy when it was taken, is replaced, so the next no-op needs no hashing.
    """
    if not recorded:
        return False
    if {k: v for k, v in recorded.items() if k != "signature"} != {k: v for k, v in record.items() if k != "signature"}:
        return False
    old, new = recorded.get("signature"), record["signature"]
    return unchanged(old, new) and old.get("content") == new.get("content")


def read_record(index_dir: Path) -> dict[str, Any] | None:
    try:
        record = atomic.read_json(index_dir / RECORD)
    except StoreError:  # unreadable: simply not trusted, the inputs are read again
        return None
    return record


def write_record(index_dir: Path, record: dict[str, Any]) -> None:
    atomic.write_json(index_dir / RECORD, record)
