"""`controller wait NAME --for=condition=Ready|phase=Healthy --timeout 5m`, like `kubectl wait`."""

from __future__ import annotations

import argparse
import sys

from controller.cliargs import EXIT_ERROR, EXIT_OK, add_output_arg, add_store_arg, add_verb, emit, resolve_store


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "wait", help="wait until an index has a condition or a phase (like kubectl wait)",
                 description=("Poll the stored status of NAME until --for holds. Exit 0 when met, 1 on timeout "
                              "(with a sentence naming what was observed), 2 invalid --for or --timeout."),
                 examples="""
                     controller wait quickstart --for=condition=Ready --timeout 5m
                     controller wait quickstart --for=phase=Healthy --timeout 30s
                     controller wait quickstart --for=condition=Degraded=False
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("--for", dest="wait_for", required=True, metavar="CONDITION",
                   help="condition=NAME[=True|False|Unknown] (default True) or phase=PHASE")
    p.add_argument("--timeout", default="30s", help="how long to wait (default 30s; e.g. 90s, 5m, 1h)")
    p.add_argument("--interval", default="1s", help="time between polls (default 1s)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import controller as api
    from controller.durations import parse_duration

    from controller.api import parse_wait_for

    target = parse_wait_for(args.wait_for)
    timeout = parse_duration(args.timeout, "--timeout")
    interval = parse_duration(args.interval, "--interval")
    result = api.wait(args.name, target, timeout, resolve_store(args), interval=max(interval, 0.05))
    payload = {"name": args.name, "for": str(target), "met": result.met, "waited": round(result.waited, 3),
               "message": result.message, "phase": (result.status or {}).get("phase")}
    if not emit(payload, args.output):
        print(result.message, file=sys.stdout if result.met else sys.stderr)
    return EXIT_OK if result.met else EXIT_ERROR
