"""`controller reconcile PATH`: make the store match the manifests, or show the plan."""

from __future__ import annotations

import argparse
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controller.cliargs import (EXIT_CHANGES, EXIT_DEGRADED, EXIT_ERROR, EXIT_OK, add_data_root_arg,
                                add_lock_timeout_arg, add_output_arg, add_store_arg, add_verb,
                                add_webhook_args, emit,
                                resolve_store, stores_into)
from controller.errors import InvalidInput

if TYPE_CHECKING:
    from controller.engine.reconcile import IndexResult


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "reconcile", help="reconcile manifests (a file, multi-document file or directory)",
                 description=(
                     "Build, check, weight and switch versions until the store matches the manifests.\n\n"
                     "exit codes: 0 ok; 1 error; 2 invalid input; 3 applied, but a candidate failed its gates\n"
                     "and was rolled back, or an index is Stalled (e.g. IndexVersionImmutable) or Degraded.\n"
                     "--dry-run alone: 0 (3 when a manifest is blocked). --dry-run --detailed-exitcode\n"
                     "(Terraform): 0 no changes, 1 error (invalid input and blocked plans included),\n"
                     "2 changes pending."),
                 examples="""
                     controller reconcile v1.yaml
                     controller reconcile manifests/ --dry-run
                     controller reconcile v2.yaml --dry-run --detailed-exitcode; echo $?   # 2: changes
                     controller reconcile v2.yaml --dry-run --out plan.json && controller apply plan.json
                     controller reconcile v3.yaml || echo "exit $?: rolled back"           # 3
                 """)
    p.add_argument("path", type=Path, help="manifest file or directory")
    p.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    p.add_argument("--detailed-exitcode", action="store_true",
                   help="needs --dry-run: exit 0 no changes, 1 error (invalid input included), 2 changes pending")
    p.add_argument("--out", metavar="FILE",
                   help="with --dry-run: save the plan for `controller apply FILE`")
    add_webhook_args(p)
    add_output_arg(p)
    add_store_arg(p)
    add_lock_timeout_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.detailed_exitcode and not args.dry_run:
        raise InvalidInput("--detailed-exitcode describes a plan (0 no changes, 2 changes pending) and needs "
                           "--dry-run; without --dry-run the exit code already says 0 ok, 3 rolled back or "
                           "degraded", field="--detailed-exitcode")
    if args.out is not None and not args.dry_run:
        raise InvalidInput("--out saves a plan for review and needs --dry-run", field="--out", value=str(args.out))
    try:
        if args.out is not None:
            args.out = check_out(args.out)
        return _run(args)
    except InvalidInput as exc:
        if not args.detailed_exitcode:
            raise
        # with --detailed-exitcode, 2 means "changes pending": invalid input must not look like that
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


#: How --out's refusal of a FIFO, device or symlink says to get the plan on stdout instead.
PRINT_THE_PLAN = "to print the plan, use -o json (add --out only to save it)"


def check_out(raw: str, flag: str = "--out", instead: str | None = PRINT_THE_PLAN,
              example: str = "plan.json") -> Path:
    """A file destination (--out, report's --html/--md) before any work: a file name whose directory exists
    (a file is never written halfway, and a typo in the directory must not create directories), that is a
    regular file if it exists. ``instead``: what to do rather than name a FIFO, device or symlink; ``example``:
    a file name to suggest inside a directory that was named."""
    if not raw.strip():
        raise InvalidInput("needs a file name", field=flag, value=raw)
    out = Path(raw)
    kind = _not_a_regular_file(out)
    if kind == "a directory":
        raise InvalidInput(f"{raw!r} is a directory; name a file, e.g. {str(out / example)!r}",
                           field=flag, value=raw)
    if kind:
        # the file is written under a temporary name and renamed over the destination: a FIFO, a device or a
        # symlink (even /dev/stdout's) would be replaced by a regular file, not written through
        raise InvalidInput(f"{raw!r} is {kind}, not a regular file, and would be replaced by one; name a regular "
                           f"file" + (f"; {instead}" if instead else ""), field=flag, value=raw)
    parent = out.parent
    if not parent.is_dir():
        why = "is not a directory" if parent.exists() else "does not exist (create it first)"
        raise InvalidInput(f"the directory {str(parent)!r} {why}", field=flag, value=raw)
    return out


def _not_a_regular_file(path: Path) -> str | None:
    """What ``path`` is when it exists and is not a regular file ("a symbolic link", even a dangling one, is
    not followed); None for a regular file or nothing there."""
    try:
        mode = path.lstat().st_mode
    except OSError:  # nothing there, or its directory is missing: the parent check says which
        return None
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    for test, kind in kinds:
        if test(mode):
            return kind
    return None if stat.S_ISREG(mode) else "a special file"


def _run(args: argparse.Namespace) -> int:
    import controller as api
    from controller.engine.reconcile import Hooks
    from controller.engine.notify import make_notifier
    from controller.engine.planfile import write_plan_file
    from controller.progress import terminal_bar

    manifests = api.load_manifests(args.path, args.data_root)
    store = resolve_store(args)
    if args.dry_run:
        results = api.plan(manifests, store)
    else:
        notifier = make_notifier(store.root, args.webhook, manifests,
                                 allow_private=args.allow_private_webhooks)
        try:
            results = api.reconcile(manifests, store, hooks=Hooks(progress=terminal_bar, on_transition=notifier))
        finally:
            notifier.close()
    if args.out is not None:
        write_plan_file(results, manifests, store, args.out, args.data_root)
    payload = {"dryRun": args.dry_run, "store": str(store.root), "indexes": [r.to_dict() for r in results]}
    if not emit(payload, args.output):
        for r in results:
            print(render_dry_run(r) if args.dry_run else render_result(r))
        if not args.dry_run:
            stores_into(store)
    return exit_code(results, dry_run=args.dry_run, detailed=args.detailed_exitcode)


def exit_code(results: list[IndexResult], *, dry_run: bool, detailed: bool) -> int:
    """The exit-code table of the README, for one reconcile or plan."""
    import controller as api

    if dry_run and detailed:
        if any(r.plan.blocked for r in results):
            return EXIT_ERROR  # a plan that cannot be applied is an error, not "changes pending"
        return EXIT_CHANGES if any(r.plan.changes for r in results) else EXIT_OK
    problems = api.unhealthy(results) if not dry_run else [
        f"{r.name}: blocked ({r.plan.blocked}): {r.plan.message}" for r in results if r.plan.blocked]
    for problem in problems:
        print(f"not healthy: {problem}", file=sys.stderr)
    return EXIT_DEGRADED if problems else EXIT_OK


def render_dry_run(r: IndexResult) -> str:
    plan = r.plan
    lines = [f"index {r.name}:"]
    if plan.blocked:
        lines.append(f"  ! blocked ({plan.blocked}): {plan.message}")
    if not plan.actions:
        lines.append(f"  no changes. {plan.message}".rstrip())
        return "\n".join(lines + _next_step(plan.rollout))
    for a in plan.actions:
        cond = "  (if the gates pass; on a failure: roll back, weight 0)" if a.if_gates_pass else ""
        lines.append(f"  + {a.kind:<9} {a.version:<10} {a.message}{cond}")
    lines += _next_step(plan.rollout)
    lines.append(f"Plan: {len(plan.actions)} action(s). Run without --dry-run to apply.")
    return "\n".join(lines)


def _next_step(rollout: dict | None) -> list[str]:
    """Stepped rollouts: where the steps will stand after this plan, what they wait for and when."""
    if not rollout or rollout.get("promoted"):
        return []
    from datetime import datetime, timezone

    due = rollout.get("nextDueAt")
    when = (f", next due at {datetime.fromtimestamp(due, timezone.utc).isoformat(timespec='seconds')}"
            if due is not None else "")
    return [f"  rollout: step {rollout['currentStepIndex'] + 1}/{rollout['steps']} ({rollout['step']}), "
            f"waiting for {rollout.get('waitingFor') or 'nothing'}{when}"]


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
    if r.plan.blocked and not r.executed:
        lines.append(f"  ! blocked ({r.plan.blocked}): {r.plan.message}")
    elif not r.executed and not r.reports:
        lines.append(f"  no changes. {r.plan.message}".rstrip())
    if r.status:
        s = r.status
        stable = s["stable"]["version"] if s["stable"] else "-"
        cand = s["candidate"]["version"] if s["candidate"] else "-"
        lines.append(f"  phase {s['phase']}: alias {s['alias']} -> stable {stable}, candidate {cand} "
                     f"at {s['weight']:g}%")
    return "\n".join(lines)
