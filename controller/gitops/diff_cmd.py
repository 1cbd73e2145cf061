"""`controller diff --repo R --ref REF`: the plan that merging REF would cause (writes nothing)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from controller.cliargs import (EXIT_CHANGES, EXIT_DEGRADED, EXIT_ERROR, EXIT_OK, add_data_root_arg,
                                add_output_arg, add_store_arg, add_verb, emit, resolve_store)
from controller.errors import InvalidInput

if TYPE_CHECKING:
    from controller.gitops.diff import DiffReport


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "diff", help="show the plan that merging a Git ref would cause",
                 description=("Observe the store as it is now and plan with the manifests at REF (a branch, "
                              "tag or commit; e.g. a pull request head). Nothing is built or switched.\n"
                              "exit codes: without --detailed-exitcode 0 (changes or not), 1 error, 2 invalid "
                              "manifests at REF, 3 a blocked plan (merging would leave an index Stalled); with "
                              "--detailed-exitcode 0 no changes, 1 error (invalid manifests and blocked plans "
                              "included), 2 changes pending."),
                 examples="""
                     controller diff --repo . --ref feature/e5 --base main
                     controller diff --repo . --ref "$GITHUB_HEAD_REF" --detailed-exitcode -o json
                 """)
    p.add_argument("--repo", required=True, metavar="PATH_OR_URL", help="Git repository (path or URL)")
    p.add_argument("--ref", required=True, help="branch, tag or commit to plan with")
    p.add_argument("--base", help="compare the manifests with this ref too (e.g. main)")
    p.add_argument("--path", default=".", metavar="DIR", help="manifest directory inside the repository")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="exit 2 when changes are pending, 0 when none (invalid manifests at REF then exit 1)")
    add_output_arg(p)
    add_store_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.gitops.diff import diff_ref

    try:
        report = diff_ref(args.repo, args.ref, resolve_store(args), path=args.path, base=args.base,
                          data_roots=args.data_root)
    except InvalidInput as exc:
        if not args.detailed_exitcode:
            raise
        # with --detailed-exitcode, 2 means "changes": an invalid manifest must not look like one
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if not emit(report.to_dict(), args.output):
        print(render(report))
    return exit_code(report, detailed=args.detailed_exitcode)


def exit_code(report: DiffReport, *, detailed: bool) -> int:
    """As `reconcile --dry-run`: a blocked plan is an error, never "no changes" nor "changes pending"."""
    if report.blocked:
        for d in report.blocked:
            print(f"not healthy: {d.name}: blocked ({d.plan.blocked}): {d.plan.message}", file=sys.stderr)
        return EXIT_ERROR if detailed else EXIT_DEGRADED
    return EXIT_CHANGES if (detailed and report.changes) else EXIT_OK


def render(report: DiffReport) -> str:
    against = f" (base {report.base} at {report.base_commit[:12]})" if report.base and report.base_commit else ""
    lines = [f"plan for {report.ref} at {report.commit[:12]}{against}:"]
    count = 0
    for d in report.indexes:
        origin = f"{d.manifest} {d.source}" if d.manifest else d.source
        lines.append(f"index {d.name}  [{origin}]")
        if d.plan.blocked:
            lines.append(f"  ! blocked ({d.plan.blocked}): {d.plan.message}")
        elif not d.plan.actions:
            lines.append(f"  no changes. {d.plan.message}".rstrip())
        for a in d.plan.actions:
            cond = "  (if the gates pass)" if a.if_gates_pass else ""
            lines.append(f"  + {a.kind:<9} {a.version:<10} {a.message}{cond}")
        count += len(d.plan.actions)
    for name in report.removed:
        lines.append(f"index {name}  [deleted]")
        lines.append("  - manifest deleted: the index keeps serving unless sync runs with --prune")
    blocked = [d.name for d in report.blocked]
    if blocked:
        lines.append(f"Blocked: {len(blocked)} index(es) cannot be applied ({', '.join(blocked)}); merging "
                     f"{report.ref} would leave them Stalled. {count} action(s), {len(report.removed)} deleted "
                     "manifest(s).")
    elif report.changes:
        lines.append(f"Plan: {count} action(s), {len(report.removed)} deleted manifest(s). Merging "
                     f"{report.ref} and syncing applies it.")
    else:
        lines.append("No changes.")
    return "\n".join(lines)
