"""`controller suspend NAME` / `controller resume NAME`: hold an index out of sync and watch.

Both verbs live here because they write and remove the same flag
(<store>/indexes/<name>/suspend.json). Unlike spec.suspend, the flag needs no
commit: it is the operator's brake while the branch keeps moving.
"""

from __future__ import annotations

import argparse

from controller.cliargs import add_store_arg, add_verb, resolve_store, stores_into


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "suspend", help="stop sync and watch from changing an index until `resume`",
                 examples="""
                     controller suspend quickstart --reason "incident 123: hold v2"
                     controller resume quickstart
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("--reason", default="", help="why (shown by status)")
    add_store_arg(p)
    p.set_defaults(run=run_suspend)
    r = add_verb(sub, "resume", help="let sync and watch reconcile a suspended index again",
                 examples="""
                     controller resume quickstart
                 """)
    r.add_argument("name", help="index name")
    add_store_arg(r)
    r.set_defaults(run=run_resume)


def run_suspend(args: argparse.Namespace) -> int:
    from controller.engine.suspend import suspend

    store = resolve_store(args)
    record = suspend(store, args.name, args.reason)
    print(f"index {args.name} suspended since {record['since']}: sync and watch leave it alone "
          f"(`controller resume {args.name}` releases it)")
    stores_into(store)
    return 0


def run_resume(args: argparse.Namespace) -> int:
    from controller.engine.suspend import resume

    store = resolve_store(args)
    was = resume(store, args.name)
    print(f"index {args.name} resumed: the next sync or watch pass reconciles it" if was
          else f"index {args.name} was not suspended; nothing to do")
    stores_into(store)
    return 0
