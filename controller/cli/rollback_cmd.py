"""`controller rollback NAME [--to VERSION]`: move the alias back by hand."""

from __future__ import annotations

import argparse

from controller.cli.common import add_output_arg, add_store_arg, print_json, resolve_store
from controller.engine.manual import rollback


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rollback", help="withdraw the candidate, or move the alias to an earlier version",
                       description=("Without --to: withdraw the candidate if there is one, else move the alias "
                                    "to the previous version. The version moved away from is held until the "
                                    "manifest changes or `rollback --to` names it."))
    p.add_argument("name", help="index name")
    p.add_argument("--to", metavar="VERSION", help="version to serve (must exist and not have failed a gate)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    record = rollback(resolve_store(args), args.name, args.to)
    if args.output == "json":
        print_json(record)
    else:
        print(record["message"])
    return 0
