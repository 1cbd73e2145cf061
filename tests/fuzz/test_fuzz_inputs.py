"""Fuzz: 1,000 seeded bad manifests, corpora, golden files and .npy files, each run dry and real.

For every case: no traceback (main returns, stderr has none), exit 2, one line naming the
broken file (or the manifest and a field/line), no store change (the store already holds a
good version, so a write would show), and bounded time (SIGALRM) and memory per run: the
kernel's high-water mark of resident memory (VmHWM) is reset before each run, so its growth
over the resident size at the start is this run's alone, whatever earlier tests in the same
pytest process (torch, a model) left behind. A sample also runs as a subprocess to check the real exit code and stderr.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from controller.cli.main import main
from tests.fuzz import generators as gen
from tests.helpers import tree_snapshot

SEED = 20261127
CASES_HASHING = 760
CASES_PRECOMPUTED = 240
TIME_LIMIT_S = 10          # per run, enforced with an alarm
MEMORY_GROWTH_LIMIT = 64 * 2**20  # per run: peak resident memory above the resident size at its start
SUBPROCESS_SAMPLE = 12

pytestmark = pytest.mark.slow


class CaseTimeout(Exception):
    pass


def _alarm(*_):
    raise CaseTimeout()


def _run(argv: list[str], capsys) -> tuple[int | str, str, float, int]:
    """main() in-process under a time alarm; never raises. Returns the run's peak RSS growth."""
    rss_before = _resident()
    _reset_peak()
    started = time.monotonic()
    signal.alarm(TIME_LIMIT_S)
    try:
        code: int | str = main(argv)
    except CaseTimeout:
        code = "timeout"
    except BaseException as exc:  # noqa: BLE001 - a traceback is exactly what the fuzz looks for
        code = f"raised {type(exc).__name__}: {exc}"[:300]
    finally:
        signal.alarm(0)
    elapsed = time.monotonic() - started
    return code, capsys.readouterr().err.strip(), elapsed, _peak_rss() - rss_before


def _status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise AssertionError(f"/proc/self/status has no {field}")


def _resident() -> int:
    return _status_bytes("VmRSS")


def _peak_rss() -> int:
    return _status_bytes("VmHWM")


def _reset_peak() -> None:
    """Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _problems(code, err: str, broken: str, elapsed: float, growth: int) -> list[str]:
    out = []
    if code != 2:
        out.append(f"exit {code!r}")
    if "Traceback" in err or len(err.splitlines()) != 1:
        out.append("not one line")
    named = broken in err or (gen.MANIFEST in err and ("field " in err or "line " in err))
    if not named:
        out.append("file/field not named")
    if elapsed > TIME_LIMIT_S:
        out.append(f"took {elapsed:.1f} s")
    if growth > MEMORY_GROWTH_LIMIT:
        out.append(f"peak memory grew by {growth / 2**20:.0f} MiB")
    return out


def _cases() -> list[tuple[str, gen.Case, int]]:
    rng = random.Random(SEED)
    cases = [("hashing", rng.choice(gen.HASHING_CASES), rng.randrange(2**32)) for _ in range(CASES_HASHING)]
    cases += [("precomputed", rng.choice(gen.PRECOMPUTED_CASES), rng.randrange(2**32))
              for _ in range(CASES_PRECOMPUTED)]
    return cases


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """Each base workspace with a store that already serves a good version."""
    root = tmp_path_factory.mktemp("fuzz")
    out = {}
    for provider in ("hashing", "precomputed"):
        base = gen.build_base(root, provider)
        store = root / f"store-{provider}"
        assert main(["reconcile", str(base / gen.MANIFEST), "--store", str(store)]) == 0
        out[provider] = (base, store)
    return out


def test_fuzzed_bad_input_is_refused_cleanly(bases, tmp_path, capsys):
    cases = _cases()
    assert len(cases) >= 1000
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    failures: list[str] = []
    kinds: Counter[str] = Counter()
    slowest = 0.0
    largest_growth = 0
    try:
        for i, (provider, make, seed) in enumerate(cases):
            base, store = bases[provider]
            ws = gen.copy_base(base, tmp_path / f"c{i}")
            broken = make(ws, random.Random(seed))
            kinds[make.__name__] += 1
            before = tree_snapshot(store)
            for dry in (True, False):
                argv = ["reconcile", str(ws / gen.MANIFEST), "--store", str(store)] + (["--dry-run"] if dry else [])
                code, err, elapsed, growth = _run(argv, capsys)
                slowest = max(slowest, elapsed)
                largest_growth = max(largest_growth, growth)
                problems = _problems(code, err, broken, elapsed, growth)
                if tree_snapshot(store) != before:
                    problems.append("store changed")
                    before = tree_snapshot(store)
                if problems:
                    failures.append(f"case {i} {make.__name__} seed {seed} {'dry' if dry else 'real'}: "
                                    f"{', '.join(problems)} | {err[:300]}")
    finally:
        signal.signal(signal.SIGALRM, old_handler)
    print(f"{len(cases)} cases x 2 runs; slowest run {slowest:.2f} s; largest peak RSS growth of a run "
          f"{largest_growth / 2**20:.1f} MiB; per generator: {dict(kinds)}")
    assert len(kinds) == len(gen.HASHING_CASES) + len(gen.PRECOMPUTED_CASES), kinds
    assert not failures, f"{len(failures)} failing runs:\n" + "\n".join(failures[:40])


def test_fuzzed_sample_as_a_subprocess(bases, tmp_path):
    """The installed entry point: real exit code 2, one stderr line, no traceback."""
    rng = random.Random(SEED + 1)
    sample = [(p, rng.choice(gen.HASHING_CASES if p == "hashing" else gen.PRECOMPUTED_CASES), rng.randrange(2**32))
              for p in ["hashing"] * (SUBPROCESS_SAMPLE - 4) + ["precomputed"] * 4]
    for i, (provider, make, seed) in enumerate(sample):
        base, store = bases[provider]
        ws = gen.copy_base(base, tmp_path / f"s{i}")
        broken = make(ws, random.Random(seed))
        before = tree_snapshot(store)
        proc = subprocess.run([sys.executable, "-m", "controller.cli.main", "reconcile", str(ws / gen.MANIFEST),
                               "--store", str(store)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (make.__name__, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert broken in proc.stderr or gen.MANIFEST in proc.stderr, proc.stderr
        assert tree_snapshot(store) == before
