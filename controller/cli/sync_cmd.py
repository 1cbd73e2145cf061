"""`controller sync --repo R --branch B --path DIR`: reconcile from a Git branch (GitOps mode)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from controller.cli.common import add_data_root_arg, add_output_arg, add_store_arg, print_json, resolve_store
from controller.gitops.sync import SyncReport, SyncSource, parse_interval, sync_loop, sync_once
from controller.progress import terminal_bar


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync", help="reconcile the manifests of a Git branch, once or every --interval",
                       description=("Fetch BRANCH of REPO (a path or any URL your git can reach), export "
                                    "exactly its head commit and reconcile the manifests under --path. The "
                                    "applied commit is recorded in the status and in the history journal."))
    p.add_argument("--repo", required=True, metavar="PATH_OR_URL", help="Git repository (path or URL)")
    p.add_argument("--branch", required=True, help="branch to follow")
    p.add_argument("--path", default=".", metavar="DIR", help="manifest directory inside the repository")
    p.add_argument("--interval", default="60s", help="time between syncs (default 60s; e.g. 30s, 5m)")
    p.add_argument("--once", action="store_true", help="sync once and exit (exit 1 when it failed)")
    p.add_argument("--prune", action="store_true",
                   help="delete indexes whose manifest was deleted from the branch (default: keep serving)")
    p.add_argument("--webhook", metavar="URL", help="POST JSON on each transition (also $CONTROLLER_WEBHOOK)")
    add_output_arg(p)
    add_store_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    interval = parse_interval(args.interval)
    store = resolve_store(args)
    source = SyncSource(args.repo, args.branch, args.path)
    kwargs = dict(prune=args.prune, data_roots=args.data_root, webhook=args.webhook)
    if args.once:
        report = sync_once(source, store, progress=terminal_bar, **kwargs)
        _print(report, args.output)
        return report.exit_code
    stop = threading.Event()
    # SIGTERM (systemd, Kubernetes) ends the loop between passes, never mid-reconcile
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"syncing {args.repo} {args.branch}:{args.path} every {interval:g}s into {store.root}", file=sys.stderr)
    try:
        sync_loop(source, store, interval, stop, lambda r: _print(r, args.output), **kwargs)
    except KeyboardInterrupt:
        pass
    return 0


def _print(report: SyncReport, output: str) -> None:
    if output == "json":
        print_json(report.to_dict())
    else:
        stream = sys.stderr if report.error else sys.stdout
        print("\n".join(report.lines()), file=stream, flush=True)
