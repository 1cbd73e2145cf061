"""Build and no-op reconcile cost of the project against raw FAISS, measured in the same run.

For each size N (default 100k; `--sizes 100000,1000000`), from seeded synthetic 384-d unit vectors
given as `provider: precomputed` (no checks section: golden/drift are not timed):

  project  controller.reconcile(manifest) of a first version (a fresh store): read the corpus,
           validate, build, write the version, promote
  raw      np.load(mmap) + index_factory + train (same sample size: the whole matrix, as the
           project trains) + add + write_index

each side in its own subprocess, so peak RSS (ru_maxrss) is that side's alone (numpy and faiss,
and on the project side its engine modules, are imported before the clock; the engine import
time is printed at the end); factories
Flat, IVF1024,Flat and HNSW32 (HNSW only at 100k or below). Then:

  no-op    a second reconcile of the same manifest (nothing to do) at 10k and at the largest size,
           the two sizes taking turns (median of 7 each)
  incremental  hashing embedder, 50k documents: first build, then 1% of the documents edited,
           against a full build of the edited corpus in a fresh store

Each build runs 3 times up to 100k (once above; --repeat N), raw and project taking turns; the
median pair ratio is reported, and each side's best time against the other's (the steadier figure
on this machine, where raw FAISS alone moves by up to 2x between runs). Raw FAISS does not fsync
its file; the project fsyncs everything it writes, so the fsync raw's file would need is timed
after raw's clock stops and printed beside. Ratios are project / raw of the same run; goals (issue 11): builds <= 1.2x, peak RSS of the Flat
build <= 1.5x the index bytes, no-op <= 0.5 s and <= 1.2x the 10k no-op, incremental <= 15% of a
full build. Numbers depend on the machine's load; compare ratios.

Run: .venv/bin/python bench/bench_build.py [--sizes 100000,1000000] [--factories "Flat;IVF1024,Flat"] [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

DIM = 384
SEED = 7
NOOP_SMALL = 10_000
INCR_DOCS = 50_000
FACTORIES = ("Flat", "IVF1024,Flat", "HNSW32")
HNSW_MAX = 100_000


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({cpu}), {mem:.1f} GiB RAM, {platform.system()} {platform.release()}"


# ---- data --------------------------------------------------------------------------------------
def make_data(ws: Path, n: int) -> None:
    """corpus.jsonl (short texts) and vectors.npy (unit rows), seeded, written in chunks."""
    import numpy as np

    ws.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    out = np.lib.format.open_memmap(ws / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    with open(ws / "corpus.jsonl", "w", encoding="utf-8") as corpus:
        for start in range(0, n, 50_000):
            stop = min(n, start + 50_000)
            block = rng.standard_normal((stop - start, DIM), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            out[start:stop] = block
            corpus.writelines(json.dumps({"id": f"d{i}", "text": f"document {i} about topic {i % 97}"}) + "\n"
                              for i in range(start, stop))
    out.flush()
    del out


def write_manifest(ws: Path, factory: str, *, provider: str = "precomputed", version: str = "v1") -> Path:
    model = ({"provider": "precomputed", "name": "synthetic", "version": "1", "dim": DIM,
              "options": {"vectors": "vectors.npy"}} if provider == "precomputed" else
             {"provider": "hashing", "name": "hashed-ngrams", "version": "1", "dim": DIM,
              "options": {"wordNgrams": 1, "seed": 1}})
    doc = {"apiVersion": "indexops.dev/v1alpha1", "kind": "EmbeddingIndex", "metadata": {"name": "bench"},
           "spec": {"corpus": {"path": "corpus.jsonl", "idField": "id", "textFields": ["text"]},
                    "model": model, "index": {"version": version, "factory": factory, "metric": "cosine"},
                    "rollout": {"percentage": 100}, "history": {"keep": 3}}}
    path = ws / f"index-{provider}-{factory.replace(',', '_')}.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


# ---- one measured side per subprocess -----------------------------------------------------------
RAW = textwrap.dedent("""
    import os, resource, sys, time, faiss, numpy as np
    vectors, factory, out = sys.argv[1:4]
    t = time.perf_counter()
    x = np.load(vectors, mmap_mode="r")
    index = faiss.index_factory(x.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        try:
            faiss.extract_index_ivf(index).cp.seed = 1234
        except RuntimeError:
            pass
        index.train(np.ascontiguousarray(x))
    for s in range(0, x.shape[0], 20000):
        index.add(np.ascontiguousarray(x[s:s + 20000]))
    faiss.write_index(index, out)
    elapsed = time.perf_counter() - t
    t = time.perf_counter()  # outside raw's time: what making its file durable would add (the project fsyncs)
    with open(out, "rb") as f:
        os.fsync(f.fileno())
    print(time.perf_counter() - t, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")

PROJECT = textwrap.dedent("""
    import resource, sys, time
    import faiss, numpy  # imported before the clock on both sides: the raw side does not time them
    t = time.perf_counter()
    from controller import api
    import controller.engine.reconcile  # the engine's modules (pydantic models, yaml, ...), as watch/sync/operator hold them
    imported = time.perf_counter() - t
    manifest, store = sys.argv[1:3]
    t = time.perf_counter()
    results = api.reconcile(manifest, store)
    elapsed = time.perf_counter() - t
    assert not api.unhealthy(results), api.unhealthy(results)
    print(imported, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


def run_side(code: str, *args: str) -> tuple[float, int]:
    """(seconds, peak RSS bytes) of one side, run alone in a fresh interpreter (imports not timed).

    Every dirty page is written back first, outside the clock: the raw side does not fsync, and the
    gigabyte and a half it leaves in the page cache at 1M would otherwise be written to disk during
    the next side's run, competing with that side's own writes (the project fsyncs what it writes).
    """
    os.sync()
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench side failed ({' '.join(args)}):\n{done.stderr[-2000:]}")
    fields = done.stdout.split()
    if code is PROJECT:
        IMPORTS.append(float(fields[-3]))
    if code is RAW:
        RAW_FSYNC.append(float(fields[-3]))
    seconds, rss = fields[-2:]
    return float(seconds), int(rss)


IMPORTS: list[float] = []  # seconds the project side spent importing its engine, outside the clock
RAW_FSYNC: list[float] = []  # seconds an fsync of raw's index file took after its clock stopped


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def version_files(store: Path) -> dict[str, int]:
    vdir = next((store / "indexes" / "bench" / "versions").iterdir())
    return {f.name: f.stat().st_size for f in vdir.iterdir() if f.is_file()}


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


# ---- cases --------------------------------------------------------------------------------------
def bench_builds(tmp: Path, sizes: list[int], factories: list[str], repeat: int | None = None) -> list[dict]:
    """Each build ``repeat`` times (default 3 up to 100k, once above), raw and project taking turns,
    so that a drift of the machine's speed between the two sides cancels in each pair's ratio; the
    median pair ratio is the one reported, with every pair's times beside it."""
    rows = []
    for n in sizes:
        ws = tmp / f"data-{n}"
        make_data(ws, n)
        times = repeat or (3 if n <= 100_000 else 1)
        for factory in factories:
            if factory.startswith("HNSW") and n > HNSW_MAX:
                continue
            pairs = []
            for turn in range(times):
                raw_s, raw_rss = run_side(RAW, str(ws / "vectors.npy"), factory, str(tmp / "raw.faiss"))
                raw_fsync = RAW_FSYNC[-1]
                raw_bytes = (tmp / "raw.faiss").stat().st_size
                (tmp / "raw.faiss").unlink()
                store = tmp / f"store-{n}-{factory}"
                shutil.rmtree(store, ignore_errors=True)  # every build a first version
                proj_s, proj_rss = run_side(PROJECT, str(write_manifest(ws, factory)), str(store))
                pairs.append((proj_s / raw_s, proj_s, raw_s, proj_rss, raw_rss, raw_fsync))
            files = version_files(store)
            ratio, proj_s, raw_s, proj_rss, raw_rss, _ = sorted(pairs)[len(pairs) // 2]
            best_proj, best_raw = min(p[1] for p in pairs), min(p[2] for p in pairs)
            durable = min(p[2] + p[5] for p in pairs)
            row = {"n": n, "factory": factory, "project": proj_s, "raw": raw_s, "ratio": ratio,
                   "best": best_proj / best_raw, "durable": best_proj / durable,
                   "rss": max(p[3] for p in pairs), "rawRss": raw_rss, "indexBytes": raw_bytes, "files": files,
                   "vectorBytes": n * DIM * 4}
            rows.append(row)
            turns = ("  (pairs: " + ", ".join(f"{p[1]:.2f}/{p[2]:.2f} s = {p[0]:.2f}x" for p in pairs) + ")"
                     if len(pairs) > 1 else "")
            print(f"  build {factory:<14} n={n:>9,}  project {proj_s:7.2f} s  raw {raw_s:7.2f} s  "
                  f"ratio {ratio:5.2f}x{' (median pair)' if len(pairs) > 1 else ''}  peak RSS {gb(row['rss'])} "
                  f"(raw {gb(raw_rss)}) = {row['rss'] / raw_bytes:4.2f}x the index bytes ({gb(raw_bytes)}); "
                  f"version on disk {gb(sum(files.values()))} = {sum(files.values()) / row['vectorBytes']:.2f}x "
                  f"the vector bytes{turns}", flush=True)
            print(f"    best of each side {best_proj:.2f} s / {best_raw:.2f} s = {row['best']:.2f}x raw; raw with "
                  f"an fsync of its file (the project's files are durable) {durable:.2f} s: "
                  f"{row['durable']:.2f}x", flush=True)
            if factory != "Flat":
                shutil.rmtree(store, ignore_errors=True)
    return rows


NOOP = textwrap.dedent("""
    import sys, time
    from controller import api
    from controller.engine.reconcile import Hooks
    manifest, store = sys.argv[1:3]
    t = time.perf_counter()
    results = api.reconcile(manifest, store)
    elapsed = time.perf_counter() - t
    assert not results[0].executed and not results[0].built, results[0].to_dict()
    with open("/proc/self/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    print(elapsed, int(io["rchar"]))
""")


def bench_noop(tmp: Path, sizes: list[int], runs: int = 7) -> dict[int, tuple[float, int]]:
    """Median of `runs` no-op reconciles per size after a first build (one settling run first: see the
    racy rule). The sizes take turns, run after run: a no-op takes milliseconds, so a drift of the
    machine's load between one size's runs and the next's would otherwise decide their ratio."""
    sides = {}
    for n in sizes:
        ws = tmp / f"data-{n}"
        if not (ws / "vectors.npy").exists():
            make_data(ws, n)
        store = tmp / f"store-{n}-Flat"
        manifest = write_manifest(ws, "Flat")
        if not store.exists():
            run_side(PROJECT, str(manifest), str(store))
        run_side(NOOP, str(manifest), str(store))
        sides[n] = (str(manifest), str(store))
    measured: dict[int, list[tuple[float, int]]] = {n: [] for n in sizes}
    for _ in range(runs):
        for n, side in sides.items():
            measured[n].append(run_side(NOOP, *side))
    return {n: sorted(times)[runs // 2] for n, times in measured.items()}


def bench_incremental(tmp: Path) -> tuple[float, float, int]:
    """(seconds of the 1% change on top of v1, seconds of a full build of the changed corpus, embedded)."""
    ws = tmp / "incr"
    ws.mkdir()
    with open(ws / "corpus.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": f"d{i}", "text": f"document {i} about topic {i % 97} and {i % 13}"}) + "\n"
                     for i in range(INCR_DOCS))
    store = tmp / "store-incr"
    run_side(PROJECT, str(write_manifest(ws, "Flat", provider="hashing")), str(store))
    lines = (ws / "corpus.jsonl").read_text().splitlines()
    for i in range(0, INCR_DOCS, 100):  # 1%
        lines[i] = json.dumps({"id": f"d{i}", "text": f"edited document {i}"})
    (ws / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    incr_s, _ = run_side(PROJECT, str(write_manifest(ws, "Flat", provider="hashing", version="v2")), str(store))
    embedded = json.loads(next(p for p in (store / "indexes" / "bench" / "versions").iterdir()
                               if p.name.startswith("v2")).joinpath("meta.json").read_text())["build"]["embedded"]
    full_s, _ = run_side(PROJECT, str(write_manifest(ws, "Flat", provider="hashing", version="v2")),
                         str(tmp / "store-incr-full"))
    return incr_s, full_s, embedded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated corpus sizes (default 100000)")
    parser.add_argument("--factories", default=";".join(FACTORIES),
                        help="semicolon-separated FAISS factories (default Flat;IVF1024,Flat;HNSW32)")
    parser.add_argument("--skip-incremental", action="store_true")
    parser.add_argument("--repeat", type=int, default=None,
                        help="builds per size and factory, raw and project taking turns (default 3 up to 100k, 1 above)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    factories = [f for f in args.factories.split(";") if f]
    print(f"machine: {machine()}; python {platform.python_version()}; {load()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-build-"))
    try:
        print("first-version build (precomputed 384-d unit vectors, no checks), project vs raw FAISS:")
        bench_builds(tmp, sizes, factories, args.repeat)
        print("no-op reconcile (nothing to do), Flat:")
        big = max(sizes)
        noops = bench_noop(tmp, sorted({NOOP_SMALL, big}))
        small_s, small_read = noops[NOOP_SMALL]
        print(f"  n={NOOP_SMALL:>9,}  {small_s:6.3f} s  read {gb(small_read)} (all files, incl. Python modules)")
        if big != NOOP_SMALL:
            big_s, big_read = noops[big]
            print(f"  n={big:>9,}  {big_s:6.3f} s  read {gb(big_read)}  = {big_s / small_s:4.2f}x the {NOOP_SMALL:,} "
                  f"time (goal <= 0.5 s and <= 1.2x)")
        if not args.skip_incremental:
            incr_s, full_s, embedded = bench_incremental(tmp)
            print(f"incremental, hashing embedder, {INCR_DOCS:,} documents, 1% edited: {incr_s:.2f} s "
                  f"(embedded {embedded:,}) vs full build {full_s:.2f} s = {incr_s / full_s:.0%} (goal <= 15%)")
        if IMPORTS:
            print(f"(project side: importing the engine took {min(IMPORTS):.2f}-{max(IMPORTS):.2f} s per process, "
                  "before the clock like numpy and faiss; CLI start-up is bench/bench_cli.py's)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"({load()} at the end: the machine is shared, so compare ratios of one run)")
    return 0


def load() -> str:
    """The 1/5/15-minute load averages: other work on the machine slows both sides, unequally."""
    try:
        return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "load average unknown"


if __name__ == "__main__":
    sys.exit(main())
