"""`controller reconcile PATH`: make the store match the manifests, or show the plan."""

from __future__ import annotations

import argparse
from pathlib import Path

from controller.cli.common import add_data_root_arg, add_output_arg, add_store_arg, print_json, resolve_store
from controller.engine.reconcile import Hooks, IndexResult, reconcile_index
from controller.errors import InvalidInput
from controller.gitops.notify import make_notifier
from controller.gitops.planfile import write_plan_file
from controller.progress import terminal_bar
from controller.manifest.load import load_manifests


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reconcile", help="reconcile manifests (a file, multi-document file or directory)",
                       description="Build, check, weight and switch versions until the store matches the manifests.")
    p.add_argument("path", type=Path, help="manifest file or directory")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="with --dry-run: exit 2 when changes are pending, 0 when none")
    p.add_argument("--out", type=Path, metavar="FILE",
                   help="with --dry-run: save the plan for `controller apply FILE`")
    p.add_argument("--webhook", metavar="URL",
                   help="POST a JSON event on each transition (also $CONTROLLER_WEBHOOK)")
    add_output_arg(p)
    add_store_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.out is not None and not args.dry_run:
        raise InvalidInput("--out saves a plan for review and needs --dry-run", field="--out", value=str(args.out))
    manifests = load_manifests(args.path, args.data_root)
    store = resolve_store(args, args.path)
    notifier = make_notifier(store.root, args.webhook, manifests)
    hooks = Hooks(progress=terminal_bar, on_transition=notifier)
    try:
        results = [reconcile_index(m, store, dry_run=args.dry_run, hooks=hooks) for m in manifests]
    finally:
        notifier.close()
    if args.out is not None:
        write_plan_file(results, manifests, store, args.out, args.data_root)
    if args.output == "json":
        print_json({"dryRun": args.dry_run, "store": str(store.root), "indexes": [r.to_dict() for r in results]})
    else:
        for r in results:
            print(render_dry_run(r) if args.dry_run else render_result(r))
    pending = any(r.plan.changes for r in results)
    return 2 if (args.dry_run and args.detailed_exitcode and pending) else 0


def render_dry_run(r: IndexResult) -> str:
    plan = r.plan
    lines = [f"index {r.name}:"]
    if plan.blocked:
        lines.append(f"  ! blocked ({plan.blocked}): {plan.message}")
    if not plan.actions:
        lines.append(f"  no changes. {plan.message}".rstrip())
        return "\n".join(lines)
    for a in plan.actions:
        cond = "  (if the gates pass; on a failure: roll back, weight 0)" if a.if_gates_pass else ""
        lines.append(f"  + {a.kind:<9} {a.version:<10} {a.message}{cond}")
    lines.append(f"Plan: {len(plan.actions)} action(s). Run without --dry-run to apply.")
    return "\n".join(lines)


def render_result(r: IndexResult) -> str:
    lines = [f"index {r.name}:"]
    for report in r.reports:
        verdict = "passed" if report.passed else "FAILED"
        lines.append(f"  checks on {report.version} {verdict}")
        for g in report.gates:
            lines.append(f"    {'ok  ' if g.passed else 'FAIL'} {g.message}")
        for d in report.drift:
            flag = "drift" if d["drifted"] else ("n/a  " if not d["informative"] else "ok   ")
            lines.append(f"    {flag} {d['detail']}")
    for a in r.executed:
        lines.append(f"  done {a.kind:<9} {a.version:<10} {a.message}")
    if not r.executed and not r.reports:
        lines.append(f"  no changes. {r.plan.message}".rstrip())
    if r.status:
        s = r.status
        stable = s["stable"]["version"] if s["stable"] else "-"
        cand = s["candidate"]["version"] if s["candidate"] else "-"
        lines.append(f"  phase {s['phase']}: alias {s['alias']} -> stable {stable}, candidate {cand} "
                     f"at {s['weight']:g}%")
    return "\n".join(lines)
