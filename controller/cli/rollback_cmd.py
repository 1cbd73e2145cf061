"""`controller rollback NAME [--to VERSION]`: move the alias back by hand."""

from __future__ import annotations

import argparse

from controller.cliargs import (add_lock_timeout_arg, add_output_arg, add_store_arg, add_verb, emit,
                                resolve_store, stores_into)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "rollback", help="withdraw the candidate, or move the alias to an earlier version",
                 description=("Without --to: withdraw the candidate if there is one, else move the alias "
                              "to the previous version. The version moved away from is held until the "
                              "manifest changes or `rollback --to` names it."),
                 examples="""
                     controller rollback quickstart
                     controller rollback quickstart --to v2
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("--to", metavar="VERSION", help="version to serve (must exist and have passed its checks)")
    p.add_argument("--force", action="store_true",
                   help="with --to: route a version that failed or never finished its checks (journaled, shown in status)")
    add_output_arg(p)
    add_store_arg(p)
    add_lock_timeout_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import controller as api

    store = resolve_store(args)
    record = api.rollback(args.name, args.to, store, force=args.force)
    if not emit(record, args.output):
        print(record["message"])
        stores_into(store)
    return 0
