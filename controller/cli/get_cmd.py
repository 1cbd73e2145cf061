"""`controller get [NAME]`: one line per index, like `kubectl get`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from controller.cliargs import add_output_arg, add_store_arg, add_verb, emit, resolve_store

COLUMNS = ("NAME", "PHASE", "STABLE", "CANDIDATE", "WEIGHT", "STEP", "AGE")


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "get", help="one line per index: NAME PHASE STABLE CANDIDATE WEIGHT STEP AGE",
                 description=("One line per index (STEP is 3/7 during a stepped rollout, else '-'; AGE since the first "
                              "journal record). -o json|yaml: a list without NAME, an object with one. An index whose "
                              "status cannot be read is listed with phase Unknown and an error; exit 1 then."),
                 examples="""
                     controller get
                     controller get quickstart -o yaml
                     controller get -o json | jq -r '.[] | select(.phase != "Healthy") | .name'
                 """)
    p.add_argument("name", nargs="?", help="index name (default: every index in the store)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import controller as api

    store = resolve_store(args)
    rows = api.get(args.name, store)
    if not emit(rows, args.output):
        if not rows:
            print(f"no indexes in {store.root}")
            return 0
        print(table(rows if isinstance(rows, list) else [rows]))
    return warn_unreadable(rows if isinstance(rows, list) else [])


def warn_unreadable(rows: list[dict[str, Any]]) -> int:
    """One stderr line per listed index whose status could not be read (phase Unknown), and exit 1 for
    them: every other index is still shown, but CI must notice the broken one."""
    from controller.api import unreadable

    broken = unreadable(rows)
    for row in broken:
        print(f"warning: phase Unknown: {row['error']}", file=sys.stderr)  # the error names the index or its file
    return 1 if broken else 0


def table(rows: list[dict[str, Any]]) -> str:
    cells = [COLUMNS] + [(r["name"], r["phase"] or "-", r["stable"] or "-", r["candidate"] or "-",
                          f"{r['weight']:g}", str(r["step"]) if r["step"] is not None else "-", r["age"])
                         for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
