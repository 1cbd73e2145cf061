"""`controller history NAME`: the journal of alias and weight changes."""

from __future__ import annotations

import argparse

from controller.cli.common import add_output_arg, add_store_arg, index_store, print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("history", help="show every alias and weight change of an index")
    p.add_argument("name", help="index name")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = index_store(args)
    records = store.journal(args.name)
    versions = [{"version": v.id, "label": v.label, "created": v.created, "verdict": v.verdict,
                 "documents": v.documents} for v in store.versions(args.name)]
    if args.output == "json":
        print_json({"name": args.name, "journal": records, "versions": versions})
        return 0
    print(f"{'TIME':<21} {'REASON':<22} {'STABLE':<10} {'CANDIDATE':<10} {'WEIGHT':>6}  MESSAGE")
    for r in records:
        to = r["to"]
        extra = f" [commit {r['commit'][:10]}]" if r.get("commit") else ""
        print(f"{r['time']:<21} {r['reason']:<22} {str(to['stable']):<10} {str(to['candidate'] or '-'):<10} "
              f"{to['weight']:>5g}%  {r['message']}{extra}")
    print("\nkept versions: " + ", ".join(f"{v['version']} ({v['verdict'] or 'unchecked'})" for v in versions))
    return 0
