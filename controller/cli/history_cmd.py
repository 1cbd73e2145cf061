"""`controller history NAME`: the journal of alias and weight changes."""

from __future__ import annotations

import argparse
import sys

from controller.cliargs import add_output_arg, add_store_arg, add_verb, emit, resolve_store


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "history", help="show every alias and weight change of an index",
                 examples="""
                     controller history quickstart
                     controller history quickstart -o json | jq '.journal[-1]'
                 """)
    p.add_argument("name", help="index name")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import controller as api

    store = resolve_store(args)
    doc = api.history(args.name, store)
    for line in store.torn_journal_lines(args.name):
        print(f"warning: {store.index_dir(args.name) / 'history.jsonl'} line {line} is torn (a crash "
              "mid-append) and was skipped", file=sys.stderr)
    if emit(doc, args.output):
        return 0
    print(f"{'TIME':<21} {'REASON':<22} {'STABLE':<10} {'CANDIDATE':<10} {'WEIGHT':>6}  MESSAGE")
    for r in doc["journal"]:
        to = r["to"]
        extra = f" [commit {r['commit'][:10]}]" if r.get("commit") else ""
        print(f"{r['time']:<21} {r['reason']:<22} {str(to['stable']):<10} {str(to['candidate'] or '-'):<10} "
              f"{to['weight']:>5g}%  {r['message']}{extra}")
    print("\nkept versions: " + ", ".join(f"{v['version']} ({v['verdict'] or 'unchecked'})"
                                          for v in doc["versions"]))
    return 0
