"""`controller apply PLAN.json`: apply a reviewed plan exactly, or refuse if it is stale."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cliargs import (add_data_root_arg, add_lock_timeout_arg, add_output_arg, add_verb,
                                add_webhook_args, emit,
                                stores_into, with_lock_timeout)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "apply", help="apply a plan saved by `reconcile --dry-run --out`",
                 description=("Apply exactly the saved plan. Refuses (exit 1, StalePlan) when the manifests, "
                              "the files they name or the store changed since the plan was made. Exit codes "
                              "as reconcile: 0 ok, 1 error or stale, 2 invalid input, 3 a candidate failed "
                              "its gates and was rolled back."),
                 examples="""
                     controller reconcile v2.yaml --dry-run --out plan.json
                     controller apply plan.json
                     controller apply plan.json --data-root /mnt/corpora
                 """)
    p.add_argument("plan", type=Path, help="plan file written by `controller reconcile PATH --dry-run --out FILE`")
    p.add_argument("--store", metavar="DIR", help="store directory (default: the one recorded in the plan)")
    add_webhook_args(p)
    add_data_root_arg(p)
    add_lock_timeout_arg(p)
    p.set_defaults(run=run)
    add_output_arg(p)


def run(args: argparse.Namespace) -> int:
    from controller.api import open_store
    from controller.cli.reconcile_cmd import exit_code, render_result
    from controller.engine.reconcile import Hooks
    from controller.engine.notify import make_notifier
    from controller.engine.planfile import apply_plan_file, read_plan_file
    from controller.progress import terminal_bar

    doc = read_plan_file(args.plan)
    store = with_lock_timeout(open_store(args.store or doc["store"]), args)
    notifier = make_notifier(store.root, args.webhook, allow_private=args.allow_private_webhooks)
    notifier.retarget(_manifests_for_webhooks(doc, args.data_root))
    hooks = Hooks(progress=terminal_bar, on_transition=notifier)
    try:
        results = apply_plan_file(args.plan, store, hooks, data_roots=args.data_root or None)
    finally:
        notifier.close()
    if not emit({"plan": str(args.plan), "store": str(store.root), "indexes": [r.to_dict() for r in results]},
                args.output):
        for r in results:
            print(render_result(r))
        stores_into(store)
    return exit_code(results, dry_run=False, detailed=False)


def _manifests_for_webhooks(doc: dict, data_roots: list[str]) -> list:
    """Per-index webhook annotations; a manifest that no longer loads is reported by the stale check."""
    from controller.errors import ControllerError
    from controller.manifest.load import load_manifests

    out = []
    for entry in doc["indexes"]:
        try:
            out += [m for m in load_manifests(entry["manifest"]["source"], data_roots or doc.get("dataRoots") or [])
                    if m.name == entry["name"]]
        except ControllerError:
            continue
    return out
