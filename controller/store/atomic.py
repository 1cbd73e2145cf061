"""Crash-safe file-system writes: temporary name, fsync, rename, fsync the directory.

A reader never sees a half-written file: either the old content or the new.

Every write the store makes goes through a function of this module, for two
reasons. Modes: files are created 0600 and directories 0700 whatever the
process umask (CONTROLLER_UMASK widens them, e.g. 027 for a group-shared
volume). Crash testing: `before_write` runs before each write, so a test can
stop the process at the N-th write (CONTROLLER_CRASH_AT=N exits at once with
status 70, the way a SIGKILL would: no cleanup, no finally) or install a hook.
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import shutil
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from controller.errors import StoreError

if TYPE_CHECKING:  # numpy loads on first use, so read-only verbs start fast
    import numpy as np

UMASK_ENV = "CONTROLLER_UMASK"
CRASH_ENV = "CONTROLLER_CRASH_AT"
CRASH_EXIT = 70
DEFAULT_UMASK = 0o077

# A test replaces this to crash (raise) before a chosen write; it gets (operation, path).
write_hook: Callable[[str, Path], None] | None = None
_writes = 0


def before_write(op: str, path: Path | str) -> None:
    """Called before every file-system write of the store (see the module docstring)."""
    global _writes
    if write_hook is not None:
        write_hook(op, Path(path))
    crash_at = os.environ.get(CRASH_ENV)
    if crash_at:
        _writes += 1
        if _writes == int(crash_at):
            os._exit(CRASH_EXIT)


def store_umask() -> int:
    raw = os.environ.get(UMASK_ENV)
    if not raw:
        return DEFAULT_UMASK
    try:
        value = int(raw, 8)
    except ValueError:
        from controller.errors import InvalidInput
        raise InvalidInput("must be an octal umask such as 077 or 027", field=f"${UMASK_ENV}", value=raw) from None
    if not 0 <= value <= 0o777 or value & 0o700:
        from controller.errors import InvalidInput
        raise InvalidInput("must be an octal umask between 000 and 077 (the owner keeps rwx)",
                           field=f"${UMASK_ENV}", value=raw)
    return value


def file_mode() -> int:
    return 0o666 & ~store_umask()


def dir_mode() -> int:
    return 0o777 & ~store_umask()


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by its path (a directory: its entries, so renames are durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path


def make_dirs(path: Path) -> None:
    """mkdir -p with the store's directory mode on every directory it creates."""
    path = Path(path)
    if path.is_dir():
        return
    make_dirs(path.parent)
    before_write("mkdir", path)
    try:
        os.mkdir(path, dir_mode())
    except FileExistsError:
        if not path.is_dir():
            raise
        return
    os.chmod(path, dir_mode())  # mkdir's mode is filtered by the process umask; chmod is not


def _open_new(path: Path, flags: int = 0) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | flags, file_mode())
    os.fchmod(fd, file_mode())
    return fd


def write_bytes(path: Path, data: bytes, *, staged: bool = False) -> None:
    """``staged``: the file is in a staging directory, whose one fsync before it is renamed into place
    makes every entry in it durable; the directory is not fsynced after each file."""
    make_dirs(path.parent)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    before_write("write", tmp)
    try:
        with os.fdopen(_open_new(tmp), "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        before_write("replace", path)
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)  # nothing half-written: a failed write or rename leaves no temporary file behind
        raise
    if not staged:
        fsync_dir(path.parent)


def _discard(tmp: Path) -> None:
    try:
        os.unlink(tmp)
    except OSError:
        pass  # never created, or already gone: the original error is the one to report


def write_json(path: Path, payload: Any, *, staged: bool = False) -> None:
    write_bytes(path, encode_json(payload), staged=staged)


def encode_json(payload: Any) -> bytes:
    """The bytes write_json writes for ``payload``."""
    return (_dumps(payload) + "\n").encode()


def _dumps(payload: Any) -> str:
    """json.dumps(payload, indent=2, sort_keys=True), byte for byte.

    An indent makes json.dumps use its pure-Python encoder; for a flat list of strings (ids.json,
    hashes.json: one entry per document) the same text comes from orjson when every string is
    printable ASCII (the two escape only " and \\ there), else it is joined from the C string
    encoder; about ten times faster.
    """
    if isinstance(payload, list) and payload and all(type(item) is str for item in payload):
        joined = "".join(payload)
        if joined.isascii() and joined.isprintable():  # escapes differ only outside printable ASCII
            import orjson  # here, not at the top: read-only verbs never write a long list

            return orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode("ascii")
        encode = json.encoder.encode_basestring_ascii
        return "[\n  " + ",\n  ".join([encode(item) for item in payload]) + "\n]"
    return json.dumps(payload, indent=2, sort_keys=True)


def read_json(path: Path, default: Any = None) -> Any:
    """A store file's JSON object, ``default`` when it is absent; StoreError naming a damaged one.

    The store writes only by rename, so a damaged file was edited or truncated from outside: say which
    file, rather than fail somewhere later on a list or a half-read document.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except NotADirectoryError:
        raise StoreError(f"{path}: a parent is not a directory") from None
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise StoreError(f"{path}: not valid JSON ({e}); restore it or remove it") from None
    if not isinstance(data, dict):
        raise StoreError(f"{path}: expected a JSON object, found {type(data).__name__}; restore it or remove it")
    return data


def write_npy(path: Path, array: np.ndarray) -> None:
    """np.save into an fsynced file (callers write inside a staging directory)."""
    import numpy as np

    before_write("write", path)
    _write_durably(path, lambda handle: np.save(handle, array, allow_pickle=False))


def _write_durably(path: Path, write: Callable[[Any], object]) -> None:
    """``write(handle)`` into ``path`` (created or truncated), made durable as it grows, then fsynced."""
    with os.fdopen(_open_new(path), "wb") as handle:
        with written_back(handle.fileno(), str(path)):
            write(handle)
            handle.flush()
        os.fsync(handle.fileno())


DIRECT_BLOCK = 4096  # what direct I/O aligns memory, lengths and offsets to (the page; a disk's block divides it)
DIRECT_STEP = 64 << 20  # bytes per direct write


@dataclass
class Image:
    """A file's bytes in page-aligned memory (whole DIRECT_BLOCKs), for ``write_image``; ``size``: the file's."""

    memory: mmap.mmap
    size: int


def new_image(size: int) -> Image:
    """Zeroed, page-aligned memory for a file of ``size`` bytes (transparent huge pages where allowed, as numpy
    asks for its own large arrays: fewer page faults)."""
    # private: a shared anonymous map is shared memory, which gets no huge pages (and costlier faults)
    memory = mmap.mmap(-1, max(DIRECT_BLOCK, -(-size // DIRECT_BLOCK) * DIRECT_BLOCK),
                       flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            memory.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass  # advice only
    return Image(memory, size)


def write_image(path: Path, image: Image) -> None:
    """``image`` as the file ``path``, fsynced (callers write inside a staging directory).

    Written with direct I/O (O_DIRECT): from that memory to the disk, with no copy into the page
    cache. A buffered write of 1.5 GB cost 1.4-3.4 s of CPU here (new page-cache pages, the copy),
    taken from a vector library training on every core beside it; a direct one 0.06 s. Where the file
    system refuses direct I/O (tmpfs, some network file systems), the bytes are written as any file's.
    """
    before_write("write", path)
    fd = _open_direct(path)
    if fd is not None:
        try:
            if _write_direct(fd, image, path):
                return
        finally:
            os.close(fd)
    _write_durably(path, lambda handle: handle.write(memoryview(image.memory)[:image.size]))


def _open_direct(path: Path) -> int | None:
    """``path`` created for direct writes, or None where the system or the file system has none."""
    flag = getattr(os, "O_DIRECT", None)
    if flag is None:
        return None
    try:
        return _open_new(path, flag)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return None
        raise


def _write_direct(fd: int, image: Image, path: Path) -> bool:
    """Whole blocks from ``image``, then the file cut to its size and fsynced; False when the first
    write is refused as unaligned (no direct I/O here: nothing was written)."""
    view = memoryview(image.memory)
    offset = 0
    try:
        while offset < len(view):
            offset += os.pwrite(fd, view[offset:offset + DIRECT_STEP], offset)
        os.ftruncate(fd, image.size)
        os.fsync(fd)
    except OSError as exc:
        if exc.errno == errno.EINVAL and offset == 0:
            return False
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
    finally:
        view.release()
    return True


def open_new(path: Path) -> int:
    """A file of the store opened for writing (created or truncated, the store's mode): the caller writes,
    fsyncs and closes it (a file streamed as it is made, in a staging directory)."""
    before_write("write", path)
    return _open_new(path)


AT_FDCWD = -100
AT_SYMLINK_FOLLOW = 0x400  # linux/fcntl.h


def open_anonymous(directory: Path) -> int | None:
    """A file with no name yet, on the file system of ``directory`` (Linux O_TMPFILE), or None.

    Writing it is not a write of the store: no directory entry changes, and a crash or a close
    frees it. ``link_anonymous`` gives it its name once it is complete and fsynced.
    """
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return None
    try:
        fd = os.open(directory, flag | os.O_RDWR, file_mode())
    except OSError:  # a file system without O_TMPFILE, or no such directory
        return None
    os.fchmod(fd, file_mode())
    return fd


def link_anonymous(fd: int, path: Path) -> None:
    """Give ``open_anonymous``'s file (complete and fsynced) the name ``path``, in a staging directory
    whose fsync makes the entry durable; copied instead (and fsynced) where it cannot be linked."""
    before_write("write", path)
    failed = _linkat_fd(fd, path)
    if not failed:
        return
    if failed not in (errno.EXDEV, errno.ENOENT, errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES):
        raise OSError(failed, os.strerror(failed), str(path))
    with open(path, "wb") as out:  # another mount, or no /proc: the bytes again
        os.fchmod(out.fileno(), file_mode())
        size, offset = os.fstat(fd).st_size, 0
        while offset < size:
            sent = os.sendfile(out.fileno(), fd, offset, size - offset)
            if sent == 0:
                raise OSError(f"short copy of {path}: {offset} of {size} bytes")
            offset += sent
        os.fsync(out.fileno())


def _linkat_fd(fd: int, path: Path) -> int:
    """linkat(/proc/self/fd/N, path, AT_SYMLINK_FOLLOW); 0, or the errno. (os.link does not follow
    that link, and AT_EMPTY_PATH needs a capability.)"""
    import ctypes

    try:
        linkat = ctypes.CDLL(None, use_errno=True).linkat
    except (OSError, AttributeError):
        return errno.ENOSYS
    if linkat(AT_FDCWD, f"/proc/self/fd/{fd}".encode(), AT_FDCWD, os.fsencode(path), AT_SYMLINK_FOLLOW) == 0:
        return 0
    return ctypes.get_errno() or errno.EIO


def write_with(path: Path, writer: Callable[[Path], None]) -> None:
    """A file written by a library (a vector index), created with the store's mode, written back as it grows."""
    before_write("write", path)
    fd = _open_new(path)  # the library's "wb" open truncates this very file: it keeps the mode
    try:
        with written_back(fd, str(path)):
            writer(path)
    finally:
        os.close(fd)
    os.chmod(path, file_mode())  # in case the library replaced the file instead
    fsync_path(path)  # the library does not fsync: its data must be durable before the staging rename


WRITEBACK_EVERY_S = 0.05


@contextmanager
def written_back(fd: int, name: str) -> Iterator[None]:
    """While the body writes a large file through ``fd``, a thread makes what is written so far durable.

    An fsync waits for the disk to write the file and to empty its own write cache into stable
    storage, which is what takes the time here (150 MB: 0.25 s, whether the pages were written back
    early or written with direct I/O). Syncing every WRITEBACK_EVERY_S while the file grows does that
    work beside the body, so the fsync that durability needs before a rename finds little left
    (bench/bench_durable_write.py: 0.11-0.17 s instead of 0.36-0.46 s for 150 MB written over 0.4 s).

    The kernel reports a write-back error once per open file, so an error this thread sees would not
    be seen again by that fsync: it is raised here, naming ``name``, once the body has finished.
    """
    failed: list[OSError] = []
    done = threading.Event()

    def write_back() -> None:
        while not done.wait(WRITEBACK_EVERY_S):
            try:
                _sync_data(fd)
            except OSError as exc:
                failed.append(exc)
                return

    thread = threading.Thread(target=write_back, name="writeback", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
    if failed:
        raise OSError(failed[0].errno, failed[0].strerror, name) from failed[0]


def _sync_data(fd: int) -> None:
    """The file's data durable (fdatasync; fsync where the system has no fdatasync)."""
    getattr(os, "fdatasync", os.fsync)(fd)


def copy_file(src: Path, dst: Path) -> None:
    make_dirs(dst.parent)
    before_write("write", dst)
    shutil.copyfile(src, dst)
    os.chmod(dst, file_mode())
    fsync_path(dst)


def rename(src: Path, dst: Path) -> None:
    before_write("rename", dst)
    os.rename(src, dst)


def remove_tree(path: Path) -> None:
    if os.path.lexists(path):
        before_write("rmtree", path)
        shutil.rmtree(path, ignore_errors=True)


def remove_file(path: Path) -> None:
    if os.path.lexists(path):
        before_write("unlink", path)
        os.unlink(path)


def append_line(path: Path, record: dict) -> None:
    """Append one JSON line and fsync: the journal is append-only.

    A crash mid-append leaves a torn last line with no newline; the next append
    first ends it, so the torn bytes stay one unreadable line and never merge
    with (and hide) the record written after them.
    """
    make_dirs(path.parent)
    line = (json.dumps(record, sort_keys=True) + "\n").encode()
    before_write("append", path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, file_mode())
    try:
        os.fchmod(fd, file_mode())
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict]:
    """Journal records; torn lines from a crash mid-append are skipped (see read_lines_checked)."""
    return read_lines_checked(path)[0]


def read_lines_newest_first(path: Path, block: int = 65_536) -> Iterator[dict]:
    """Journal records from the last line back, read in blocks from the end of the file, so a reader
    that stops at a recent record reads only the tail (a no-op reconcile must not scale with history).
    Torn lines are skipped, as by read_lines."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return
    with handle:
        position = handle.seek(0, os.SEEK_END)
        rest = b""  # the start of a line whose beginning lies in the next block back
        while position > 0:
            start = max(0, position - block)
            handle.seek(start)
            lines = (handle.read(position - start) + rest).split(b"\n")
            position = start
            rest = lines.pop(0) if position > 0 else b""
            for line in reversed(lines):
                record = _record_of(line)
                if record is not None:
                    yield record


def _record_of(line: bytes) -> dict | None:
    text = line.decode("utf-8", errors="replace")
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) else None


def read_lines_checked(path: Path) -> tuple[list[dict], list[int]]:
    """Journal records and the 1-based numbers of the lines that are not a JSON record."""
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], []
    records, torn = [], []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            torn.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            torn.append(number)
    return records, torn
