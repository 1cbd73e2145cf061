"""`controller events NAME`: online signals per version from the search service's event log."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cliargs import add_output_arg, add_store_arg, add_verb, emit, resolve_store
from controller.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "events", help="summarise served queries and feedback per version",
                 examples="""
                     controller events quickstart
                     controller events quickstart --since 1h -o json
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION (e.g. 30s, 15m, 1h, 2d)")
    p.add_argument("--events", metavar="DIR", help="event log directory (default: <store>/events)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.durations import parse_duration
    from controller.engine.events import index_events
    from controller.store.events import events_root

    # a look back (not a wait whose deadline could overflow): no upper bound
    since = parse_duration(args.since, "--since", longest=float("inf")) if args.since is not None else None
    store = resolve_store(args)
    if args.events is not None and not Path(args.events).is_dir():  # a typo read as "no events", exit 0
        raise InvalidInput("not a directory: --events names the event log directory", field="--events",
                           value=args.events)
    root = Path(args.events) if args.events else events_root(store.root)
    if not (root / args.name).is_dir():
        store.require_index(args.name)
    summary = index_events(root, args.name, since_s=since)
    if emit({"name": args.name, "since": args.since, "versions": summary}, args.output):
        return 0
    if not summary:
        print(f"no events for {args.name}" + (f" in the last {args.since}" if args.since else ""))
        return 0
    cols = ("version", "role", "queries", "ctr", "clk/q", "mrr", "skip", "compl", "zero", "dwell~ms",
            "p50ms", "p95ms", "p99ms", "errors", "interlvd")
    print("  ".join(f"{c:>8}" for c in cols))
    for version, v in summary.items():
        lat = v["latencyMs"] or {}
        row = (version, v["role"] or "-", v["queries"], v["ctr"], v["clicksPerQuery"], v["mrr"], v["skipRate"],
               v["complaintRate"], v["zeroResultRate"], v["dwellMedianMs"], lat.get("p50"), lat.get("p95"),
               lat.get("p99"), v["errors"], v["interleaved"])
        print("  ".join(f"{_fmt(x):>8}" for x in row))
    return 0


def _fmt(x: object) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)
