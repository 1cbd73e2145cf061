"""`controller apply PLAN.json`: apply a reviewed plan exactly, or refuse if it is stale."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cli.common import add_output_arg, print_json
from controller.cli.reconcile_cmd import render_result
from controller.engine.reconcile import Hooks
from controller.errors import ControllerError
from controller.gitops.notify import make_notifier
from controller.gitops.planfile import apply_plan_file, read_plan_file
from controller.progress import terminal_bar
from controller.manifest.load import load_manifests
from controller.store.fs import Store


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("apply", help="apply a plan saved by `reconcile --dry-run --out`",
                       description=("Apply exactly the saved plan. Refuses (exit 1, StalePlan) when the manifests, "
                                    "the files they name or the store changed since the plan was made."))
    p.add_argument("plan", type=Path, help="plan file written by `controller reconcile PATH --dry-run --out FILE`")
    p.add_argument("--store", metavar="DIR", help="store directory (default: the one recorded in the plan)")
    p.add_argument("--webhook", metavar="URL", help="POST JSON on each transition (also $CONTROLLER_WEBHOOK)")
    add_output_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    doc = read_plan_file(args.plan)
    store = Store(Path(args.store or doc["store"]))
    notifier = make_notifier(store.root, args.webhook)
    notifier.retarget(_manifests_for_webhooks(doc))
    hooks = Hooks(progress=terminal_bar, on_transition=notifier)
    try:
        results = apply_plan_file(args.plan, store, hooks)
    finally:
        notifier.close()
    if args.output == "json":
        print_json({"plan": str(args.plan), "store": str(store.root), "indexes": [r.to_dict() for r in results]})
    else:
        for r in results:
            print(render_result(r))
    return 0


def _manifests_for_webhooks(doc: dict) -> list:
    """Per-index webhook annotations; a manifest that no longer loads is reported by the stale check."""
    out = []
    for entry in doc["indexes"]:
        try:
            out += [m for m in load_manifests(entry["manifest"]["source"], doc.get("dataRoots") or [])
                    if m.name == entry["name"]]
        except ControllerError:
            continue
    return out
