"""`controller drift NAME --queries FILE.npy | --recorded`: query drift versus the golden queries."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from controller.cliargs import EXIT_DEGRADED, EXIT_OK, add_output_arg, add_store_arg, add_verb, emit, index_store
from controller.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    import numpy as np

    from controller.store.fs import Store


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
    if text is None:
        return None
    metrics = [(m.strip(), None) for m in text.split(",") if m.strip()]
    if not metrics:  # "" or ",": not the default set, which it silently meant (as in calibrate)
        raise InvalidInput("no statistic named; leave --metrics out for the default set", field="--metrics", value=text)
    return metrics


def recorded_queries(store: Store, name: str, version: str) -> tuple[np.ndarray, str]:
    """The reservoir of served queries for the version's model, and its description.

    Too few recorded queries (none, or one) is the store's state, not a bad flag: NotFound (exit 1) naming
    --recorded either way, so a scheduled `drift --recorded` fails the same until enough traffic was served.
    """
    from controller.engine.drift import MIN_QUERY_ROWS, require_version
    from controller.store import queries as Q

    fp = require_version(store, name, version)["fingerprint"]
    res = Q.read_reservoir(store.index_dir(name), fp)
    rows = 0 if res is None else int(res.vectors.shape[0])
    if res is None or rows < MIN_QUERY_ROWS:
        counted = f"{rows} quer{'y was' if rows == 1 else 'ies were'}"
        raise NotFound(f"--recorded: {counted} recorded for {name}/{version} (model {fp.get('name')}@"
                       f"{fp.get('version')}); query drift needs at least {MIN_QUERY_ROWS}: "
                       f"serve more with `controller query {name} TEXT`, or pass --queries FILE.npy")
    return res.vectors, f"{rows} recorded queries (of {res.seen} served)"


def run(args: argparse.Namespace) -> int:
    from controller.engine.drift import QueryFields, query_drift

    store = index_store(args)
    version = args.version or store.routing(args.name).stable
    if version is None:
        raise NotFound(f"{args.name} has no stable version; run `controller reconcile` first")
    metrics = parse_metrics(args.metrics)  # a flag error before any file is read
    if args.recorded:
        current, source = recorded_queries(store, args.name, version)
    else:
        current, source = load_npy(args.queries, "--queries"), str(args.queries)
    reference = load_npy(args.reference, "--reference") if args.reference else None
    fields = QueryFields(current="--recorded" if args.recorded else "--queries")
    report = query_drift(store, args.name, current, source=source, version=version, reference=reference,
                         metrics=metrics, fields=fields)
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
