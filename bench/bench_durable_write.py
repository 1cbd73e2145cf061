"""What making a growing file durable costs: the store's way against a plain write and one fsync.

A build writes its index file while other work runs (the corpus parse), then fsyncs it before the
staging rename. This writes SIZE MB in 8 MB writes paced over PACE seconds, as a build does, in a
temporary directory on the store's file system (`--dir`), and times the closing fsync and the
whole, for:

  plain      buffered writes, then one fsync (the baseline)
  store      buffered writes inside `atomic.written_back` (fdatasync every WRITEBACK_EVERY_S on a
             thread), then the fsync
  direct     O_DIRECT writes, then one fsync (where the file system takes direct I/O)

Each repeat runs the three in turn; medians, and ratios against plain from the same run.

Run: .venv/bin/python bench/bench_durable_write.py [--size-mb 150] [--pace 0.4] [--repeat 5] [--dir PATH]
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, ContextManager

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from controller.store import atomic  # noqa: E402

CHUNK = 8 << 20


def _write(path: Path, size: int, pace: float, *, direct: bool, around: Callable[[int], ContextManager[None]] | None
           ) -> tuple[float, float]:
    """(closing fsync seconds, total seconds) of one paced write of ``size`` bytes."""
    buf = mmap.mmap(-1, CHUNK)  # page-aligned, as direct I/O needs
    buf.write(os.urandom(CHUNK))
    steps = max(1, size // CHUNK)
    os.sync()
    started = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_DIRECT if direct else 0), 0o600)
    try:
        with around(fd) if around else nullcontext():
            for _ in range(steps):
                os.write(fd, buf)
                time.sleep(pace / steps)
        closing = time.perf_counter()
        os.fsync(fd)
    finally:
        os.close(fd)
        path.unlink()
    done = time.perf_counter()
    return done - closing, done - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=150)
    parser.add_argument("--pace", type=float, default=0.4, help="seconds the writes are spread over")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="a directory on the store's file system")
    args = parser.parse_args(argv)
    if args.dir is not None and not args.dir.is_dir():
        parser.error(f"--dir {args.dir}: not a directory")
    ways: dict[str, dict] = {
        "plain": {"direct": False, "around": None},
        "store": {"direct": False, "around": lambda fd: atomic.written_back(fd, "bench file")},
        "direct": {"direct": True, "around": None},
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for _ in range(args.repeat):
            for name, how in ways.items():
                try:
                    times[name].append(_write(Path(tmp) / name, args.size_mb << 20, args.pace, **how))
                except OSError:  # no direct I/O on this file system
                    continue
    base = statistics.median(t for _, t in times["plain"])
    print(f"{args.size_mb} MB in {CHUNK >> 20} MB writes over {args.pace} s, {args.repeat} runs each "
          f"(load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}):")
    for name, runs in times.items():
        if not runs:
            print(f"  {name:<7} not available here")
            continue
        closing, total = statistics.median(c for c, _ in runs), statistics.median(t for _, t in runs)
        print(f"  {name:<7} closing fsync {closing:.3f} s  write + fsync {total:.3f} s  = {total / base:.2f}x plain"
              f"  (closing fsync {min(c for c, _ in runs):.3f}-{max(c for c, _ in runs):.3f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
