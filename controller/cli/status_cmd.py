"""`controller status [NAME]`: phase, routing and the last gate values."""

from __future__ import annotations

import argparse
from typing import Any

from controller.cli.common import add_output_arg, add_store_arg, print_json, resolve_store
from controller.errors import NotFound
from controller.gitops.state import sync_state


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the status of one index or all")
    p.add_argument("name", nargs="?", help="index name (default: every index in the store)")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    store = resolve_store(args)
    names = [args.name] if args.name else store.indexes()
    statuses = []
    for name in names:
        store.require_index(name)
        status = store.status(name)
        if status is None:
            raise NotFound(f"index {name!r} has never been reconciled in {store.root}")
        sync = sync_state(store, name)
        statuses.append({**status, "sync": sync} if sync else status)
    if args.output == "json":
        print_json(statuses[0] if args.name else statuses)
        return 0
    if not statuses:
        print(f"no indexes in {store.root}")
    for s in statuses:
        print(render(s))
    return 0


def _version(ref: dict[str, Any] | None) -> str:
    if not ref:
        return "-"
    fp = ref["fingerprint"]
    return f"{ref['version']} ({fp['provider']}/{fp['name']}@{fp['version']}, {ref['factory']})"


def render(s: dict[str, Any]) -> str:
    lines = [
        f"{s['name']}  phase {s['phase']}",
        f"  alias      {s['alias']}",
        f"  stable     {_version(s.get('stable'))}",
        f"  candidate  {_version(s.get('candidate'))}  weight {s.get('weight', 0):g}%",
        f"  message    {s.get('message', '')}",
    ]
    if s.get("sync"):
        lines.append(f"  sync       {s['sync']['message']}")
    if s.get("metrics"):
        checked = s.get("checkedVersion")
        nums = ", ".join(f"{k} {v:.4f}" for k, v in sorted(s["metrics"].items()))
        lines.append(f"  metrics    {checked}: {nums}")
    for g in s.get("gates", []):
        lines.append(f"  gate       {'ok  ' if g['passed'] else 'FAIL'} {g['message']}")
    for d in s.get("drift", []):
        lines.append(f"  drift      {d['detail']}")
    for q in s.get("regressed", []):
        lines.append(f"  regressed  {q['query']} {q['metric']} {q['old']:.3f} -> {q['new']:.3f}  {q['text'][:70]}")
    return "\n".join(lines)
