"""Opening user files safely: every manifest, corpus, golden and vector file goes through here.

Why one module: the same hostile inputs (a FIFO that blocks forever, a device,
a directory where a file is expected, a NUL byte in a path, invalid UTF-8, a
`.npz` or a pickled `.npy` renamed `.npy`) must be refused the same way
everywhere, as an InvalidInput naming the file, the field and where in the
file the problem is, never as a traceback or a hang.

Content of user files is never echoed whole: `snippet()` shows at most a few
escaped characters, so a broad --data-root cannot be used to read files out
through error messages.
"""

from __future__ import annotations

import codecs
import os
import re
import stat
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Iterable, Iterator

from controller.errors import InvalidInput
# one definition of the patterns (DNS-1123 label for names; no separator or leading dot in versions)
from controller.manifest.defaults import NAME_PATTERN, VERSION_PATTERN

if TYPE_CHECKING:  # numpy loads on first use: the store imports this module, and `controller status` starts fast
    import numpy as np

NAME_MAX = 63
VERSION_MAX = 80  # a 63-character label plus a revision suffix such as .r12
SNIPPET_CHARS = 40
NPZ_MAGIC = b"PK\x03\x04"

_NAME_RE = re.compile(NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)


def valid_name(name: object) -> bool:
    return isinstance(name, str) and len(name) <= NAME_MAX and bool(_NAME_RE.match(name))


def validate_name(name: object, *, field: str = "name", file: str | Path | None = None) -> str:
    """An index name as a DNS-1123 label, checked before any path is built from it."""
    if not valid_name(name):
        raise InvalidInput(
            "an index name must be a DNS-1123 label: at most 63 characters a-z, 0-9 and '-', "
            "starting and ending with a letter or digit", file=file, field=field, value=snippet(str(name)))
    return name


def validate_version(version: object, *, field: str = "version") -> str:
    """A version label, checked before any path is built from it."""
    if not isinstance(version, str) or len(version) > VERSION_MAX or not _VERSION_RE.match(version):
        raise InvalidInput(
            "a version must be at most 80 characters A-Z, a-z, 0-9, '-', '_' and '.', starting and "
            "ending with a letter or digit", field=field, value=snippet(str(version)))
    return version


def snippet(text: str | bytes, limit: int = SNIPPET_CHARS) -> str:
    """At most `limit` characters, non-printable ones escaped: safe to put in a one-line error."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="backslashreplace")
    cut = text[:limit]
    shown = cut.encode("unicode_escape").decode("ascii")
    return shown + ("..." if len(text) > limit else "")


def check_path_text(path: str | Path, *, file: str | Path | None = None, field: str | None = None) -> Path:
    """Refuse NUL bytes before the OS sees the path (it raises ValueError deep inside)."""
    text = os.fspath(path)
    if "\0" in text:
        raise InvalidInput("the path contains a NUL byte", file=file, field=field, value=snippet(text))
    return Path(text)


def open_regular(path: str | Path, *, file: str | Path | None = None, field: str | None = None,
                 what: str = "file") -> IO[bytes]:
    """Open a regular file for reading, refusing FIFOs, devices, sockets and directories.

    stat() first so a FIFO is never opened; then open with O_NONBLOCK (a FIFO
    swapped in between cannot block the open) and fstat() the descriptor, so
    what is read is what was checked.
    """
    p = check_path_text(path, file=file, field=field)
    where = file if file is not None else p
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise InvalidInput(f"{what} {p} does not exist", file=where, field=field) from None
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {p}: {exc.strerror}", file=where, field=field) from exc
    _require_regular(st.st_mode, p, where, field, what)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InvalidInput(f"cannot read {what} {p}: {exc.strerror}", file=where, field=field) from exc
    try:
        _require_regular(os.fstat(fd).st_mode, p, where, field, what)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _require_regular(mode: int, path: Path, where: str | Path, field: str | None, what: str) -> None:
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")
    raise InvalidInput(f"{what} {path} is {kind}; expected a regular file", file=where, field=field)


def read_bytes(path: str | Path, *, file: str | Path | None = None, field: str | None = None,
               what: str = "file", max_bytes: int | None = None) -> bytes:
    """The whole file, refusing anything larger than `max_bytes` without reading it."""
    with open_regular(path, file=file, field=field, what=what) as handle:
        if max_bytes is not None:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise InvalidInput(f"{what} {path} is {size} bytes; the limit is {max_bytes} bytes",
                                   file=file if file is not None else path, field=field)
            data = handle.read(max_bytes + 1)
            if len(data) > max_bytes:  # grew after the check
                raise InvalidInput(f"{what} {path} is over the limit of {max_bytes} bytes",
                                   file=file if file is not None else path, field=field)
            return data
        return handle.read()


def decode_utf8(data: bytes, path: str | Path, *, field: str | None = None, first_line: int = 1,
                line_offset: int = 0) -> str:
    """Decode UTF-8, or name the line and byte offset of the first invalid byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        start_of_line = data.rfind(b"\n", 0, exc.start) + 1
        column = exc.start - start_of_line + 1
        raise InvalidInput(
            f"invalid UTF-8 at line {line}, byte {column} of the line (0-based byte offset "
            f"{line_offset + exc.start} in the file): {exc.reason}", file=path, field=field) from None


def read_text(path: str | Path, *, file: str | Path | None = None, field: str | None = None,
              what: str = "file", max_bytes: int | None = None) -> str:
    """A whole UTF-8 text file (a leading BOM is dropped)."""
    data = read_bytes(path, file=file, field=field, what=what, max_bytes=max_bytes)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    return decode_utf8(data, path, field=field)


def iter_lines(path: str | Path, *, file: str | Path | None = None, field: str | None = None,
               what: str = "file") -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end) of a UTF-8 file, streamed.

    Each line is decoded on its own so a bad byte is reported with its line
    and byte offset without holding the whole file in memory.
    """
    offset = 0
    with open_regular(path, file=file, field=field, what=what) as handle:
        for lineno, raw in enumerate(handle, start=1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]
                offset += len(codecs.BOM_UTF8)
            text = decode_utf8(raw, path, field=field, first_line=lineno, line_offset=offset)
            offset += len(raw)
            yield lineno, text.rstrip("\r\n")


def load_npy(path: str | Path, *, file: str | Path | None = None, field: str | None = None,
             mmap: bool = True, ndims: tuple[int, ...] = (2,)) -> np.ndarray:
    """A 2-D float matrix (or an array of another of ``ndims`` dimensions) from a .npy file, its header
    checked before any data is mapped.

    Refused with a sentence: an empty file, a .npz archive, a bad magic string
    or header, object dtypes (they would need pickle), non-float dtypes, and
    any other number of dimensions. A FIFO or device is refused by open_regular
    (reading one would block). The header is parsed by numpy.lib.format, which
    never unpickles.
    """
    import numpy as np

    p = check_path_text(path, file=file, field=field)
    where = file if file is not None else p
    name = p.name
    with open_regular(p, file=file, field=field, what="vector file") as handle:
        head = handle.read(6)
        if not head:
            raise InvalidInput(f"{name} is empty; expected a .npy matrix", file=where, field=field)
        if head.startswith(NPZ_MAGIC):
            raise InvalidInput(
                f"{name} is a .npz archive, not a .npy file; save one matrix with numpy.save(), "
                "or extract it with numpy.load(path)[key]", file=where, field=field)
        handle.seek(0)
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except Exception as exc:  # noqa: BLE001 - numpy's header parser raises many types on hostile bytes
            raise InvalidInput(f"cannot read {name} as a .npy file (bad magic string or header): {snippet(str(exc), 120)}",
                               file=where, field=field) from None
        data_size = os.fstat(handle.fileno()).st_size - handle.tell()
    if dtype.hasobject:
        raise InvalidInput(f"{name} holds Python objects (dtype {dtype}); only float matrices are read, "
                           "never pickles", file=where, field=field)
    if not np.issubdtype(dtype, np.floating):
        raise InvalidInput(f"{name} has dtype {dtype}; expected floats", file=where, field=field)
    if len(shape) not in ndims:
        wanted = "a 2-D matrix" if ndims == (2,) else "a " + " or ".join(f"{n}-D" for n in ndims) + " array"
        raise InvalidInput(f"{name} has shape {shape}; expected {wanted}", file=where, field=field)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if data_size < expected:
        raise InvalidInput(f"{name} is truncated: its header announces shape {shape} ({expected} bytes) "
                           f"but {data_size} bytes follow", file=where, field=field)
    try:
        return np.load(p, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot read {name} as a .npy matrix: {snippet(str(exc), 120)}",
                           file=where, field=field) from None


def field_path(loc: Iterable[Any]) -> str:
    """spec.rollout.steps[2].pause.duration: list positions in brackets, as users write them."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
