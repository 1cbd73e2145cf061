"""Start-up cost of the CLI relative to importing numpy and faiss, measured in the same run.

Wall time (median of N runs, each a fresh process) of:
  python -c pass                     the interpreter alone (floor)
  python -c "import numpy, faiss"    the baseline: what every verb paid before lazy imports
  controller --version
  controller get                     against a store holding one reconciled index
  controller status
Goal: `--version`, `get` and `status` under 0.3 s, and well below the baseline. Each case runs once
unmeasured first, with bytecode caching on (as for an installed package).
The numbers depend on the machine's load; the ratios to the baseline of the same run are what to compare.

Run: .venv/bin/python bench/bench_cli.py [runs]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONTROLLER = [sys.executable, "-m", "controller.cli.main"]
TARGET = 0.3


def wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(runs: int = 7) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        env = {**os.environ, "CONTROLLER_STORE": str(tmp / "store")}
        # measure what users see: bytecode cached (PYTHONDONTWRITEBYTECODE would recompile every module)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run(CONTROLLER + ["reconcile", str(REPO / "examples" / "quickstart" / "v1.yaml")], env=env,
                       stdout=subprocess.DEVNULL, check=True)
        cases = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "import numpy, faiss": [sys.executable, "-c", "import numpy, faiss"],
            "controller --version": CONTROLLER + ["--version"],
            "controller get": CONTROLLER + ["get"],
            "controller status": CONTROLLER + ["status"],
        }
        measured = {name: wall(argv, env, runs) for name, argv in cases.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    baseline = measured["import numpy, faiss"]
    print(f"median wall time of {runs} runs each (os.getloadavg: {os.getloadavg()[0]:.1f})")
    floor = measured["python -c pass"]
    print(f"  {'command':<24} {'seconds':>8} {'vs numpy+faiss':>15} {'over the interpreter':>21}")
    worst = 0.0
    for name, seconds in measured.items():
        print(f"  {name:<24} {seconds:>8.3f} {seconds / baseline:>14.2f}x {seconds - floor:>+20.3f}s")
        if name.startswith("controller"):
            worst = max(worst, seconds)
    verdict = "meets" if worst < TARGET else "MISSES"
    print(f"slowest controller command {worst:.3f} s: {verdict} the {TARGET} s target "
          f"({worst / baseline:.2f}x the numpy+faiss import)")
    return 0


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 7))
