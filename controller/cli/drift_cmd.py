"""`controller drift NAME --queries FILE.npy | --recorded`: query drift versus the golden queries."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from controller.cliargs import EXIT_DEGRADED, EXIT_OK, add_output_arg, add_store_arg, add_verb, emit, index_store
from controller.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "drift", help="query drift: recent or supplied query vectors vs the golden queries",
                 description=("Compare recent (or supplied) query vectors with the version's golden queries.\n"
                              "exit codes: 0 no drift; 3 drift detected; 1 error; 2 invalid input."),
                 examples="""
                     controller drift quickstart --recorded
                     controller drift quickstart --queries today.npy -o json
                     controller drift quickstart --recorded || alert "query drift"
                 """)
    p.add_argument("name", help="index name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--queries", type=Path, metavar="FILE.npy", help="query vectors (rows, dim) to compare")
    src.add_argument("--recorded", action="store_true",
                     help="the reservoir of queries served by `controller query` for this version's model")
    p.add_argument("--version", help="version whose golden queries are the reference (default: stable)")
    p.add_argument("--reference", type=Path, metavar="FILE.npy",
                   help="reference query vectors instead of the version's golden queries")
    p.add_argument("--metrics", help="comma-separated statistics (default: cosineShift,pairCosineShift,mmd,ksDims)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def load_npy(path: Path, flag: str) -> np.ndarray:
    """A 2-D float matrix from .npy, or an InvalidInput naming the flag and the file."""
    import numpy as np

    from controller.inputs import load_npy as safe_load_npy

    m = np.asarray(safe_load_npy(path, field=flag, mmap=False))  # no FIFO, npz or pickle; header checked
    if m.ndim != 2 or not np.issubdtype(m.dtype, np.floating):
        raise InvalidInput(f"{path} holds a {m.dtype} array of shape {m.shape}; expected a 2-D float matrix",
                           field=flag, value=str(path))
    if not np.isfinite(m).all():
        raise InvalidInput(f"{path} contains NaN or inf", field=flag, value=str(path))
    return m.astype(np.float32, copy=False)


def parse_metrics(text: str | None) -> list[tuple[str, None]] | None:
    if not text:
        return None
    return [(m.strip(), None) for m in text.split(",") if m.strip()]


def run(args: argparse.Namespace) -> int:
    from controller.engine.drift import query_drift
    from controller.store import queries as Q

    store = index_store(args)
    version = args.version or store.routing(args.name).stable
    if version is None:
        raise NotFound(f"{args.name} has no stable version; run `controller reconcile` first")
    if args.recorded:
        fp = store.meta(args.name, version)["fingerprint"]
        res = Q.require_reservoir(store.index_dir(args.name), args.name, version, fp)
        current, source = res.vectors, f"{res.vectors.shape[0]} recorded queries (of {res.seen} served)"
    else:
        current, source = load_npy(args.queries, "--queries"), str(args.queries)
    reference = load_npy(args.reference, "--reference") if args.reference else None
    report = query_drift(store, args.name, current, source=source, version=version, reference=reference,
                         metrics=parse_metrics(args.metrics))
    code = EXIT_DEGRADED if report["drifted"] else EXIT_OK
    if emit(report, args.output):
        return code
    verdict = "DRIFT" if report["drifted"] else "no drift"
    print(f"{args.name}/{report['version']} query drift: {verdict}")
    print(f"  reference  {report['reference']} ({report['referenceRows']} rows)")
    print(f"  current    {report['current']} ({report['currentRows']} rows)")
    for r in report["results"]:
        flag = "DRIFT" if r["drifted"] else ("ok   " if r["informative"] else "n/a  ")
        print(f"  {flag} {r['statistic']:<16} {r['detail']}")
    return code
