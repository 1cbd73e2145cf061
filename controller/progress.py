"""A minimal progress bar on stderr, shown only when stderr is a terminal.

Long work (embedding, index builds) reports through a callback so library
code stays silent in tests, CI logs and JSON output.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Protocol


class Progress(Protocol):
    def __call__(self, done: int, total: int) -> None: ...


def silent(done: int, total: int) -> None:
    """The default: library calls report nothing unless a shell asks for it."""


def terminal_bar(label: str, stream=None) -> Callable[[int, int], None]:
    """A redraw-in-place bar when `stream` is a TTY, else silent."""
    out = stream or sys.stderr
    if not out.isatty():
        return silent
    started = time.monotonic()
    last = [0.0]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - last[0] < 0.1:
            return
        last[0] = now
        frac = done / total if total else 1.0
        filled = int(frac * 30)
        rate = done / max(now - started, 1e-9)
        eta = f" ETA {(total - done) / rate:,.0f}s" if 0 < done < total and rate > 0 else ""
        out.write(f"\r{label:<12} [{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {rate:,.0f}/s{eta}")
        if done >= total:
            out.write("\n")
        out.flush()

    return update
