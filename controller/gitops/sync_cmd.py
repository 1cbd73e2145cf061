"""`controller sync --repo R --branch B --path DIR`: reconcile from a Git branch (GitOps mode)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from controller.cliargs import (add_data_root_arg, add_lock_timeout_arg, add_output_arg, add_store_arg,
                                add_verb, add_webhook_args, emit, resolve_store)
from controller.errors import InvalidInput
from controller.gitops.loopout import LOG_FORMATS, LoopPrinter


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "sync", help="reconcile the manifests of a Git branch, once or every --interval",
                 description=("Fetch BRANCH of REPO (a path or any URL your git can reach), export "
                              "exactly its head commit and reconcile the manifests under --path. The "
                              "applied commit is recorded in the status and in the history journal.\n"
                              "--once exits 0 ok, 1 error, 2 invalid manifests at the head commit, 3 applied but not "
                              "healthy (a candidate rolled back, an index Stalled or Degraded)."),
                 examples="""
                     controller sync --repo https://git.example.com/search/indexes.git --branch main --path prod
                     controller sync --repo . --branch main --once -o json
                     controller sync --repo . --branch main --interval 30s --log-format json --heartbeat 5m
                 """)
    p.add_argument("--repo", required=True, metavar="PATH_OR_URL", help="Git repository (path or URL)")
    p.add_argument("--branch", required=True, help="branch to follow")
    p.add_argument("--path", default=".", metavar="DIR", help="manifest directory inside the repository")
    p.add_argument("--interval", default="60s", help="time between syncs (default 60s; e.g. 30s, 5m)")
    p.add_argument("--once", action="store_true",
                   help="sync once and exit (1 failed, 2 invalid manifests, 3 not healthy)")
    p.add_argument("--prune", action="store_true",
                   help="delete indexes whose manifest was deleted from the branch (default: keep serving)")
    add_webhook_args(p)
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="loop output: timestamped text lines or one JSON object per line (default: text)")
    p.add_argument("--heartbeat", default="10m",
                   help="print an unchanged pass at most this often (default 10m); changes always print")
    add_output_arg(p)
    add_store_arg(p)
    add_lock_timeout_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.durations import parse_duration
    from controller.gitops.sync import SyncSource, sync_loop, sync_once
    from controller.progress import terminal_bar

    if not args.once and args.output == "yaml":  # the loop prints lines as it goes: text or JSON lines
        raise InvalidInput("the sync loop prints text or JSON lines (--log-format json, or -o json); "
                           "-o yaml needs --once", field="-o", value=args.output)
    interval = parse_duration(args.interval, "--interval")
    heartbeat = parse_duration(args.heartbeat, "--heartbeat")
    store = resolve_store(args)
    source = SyncSource(args.repo, args.branch, args.path)
    kwargs = dict(prune=args.prune, data_roots=args.data_root, webhook=args.webhook,
                  allow_private_webhooks=args.allow_private_webhooks)
    if args.once:
        report = sync_once(source, store, progress=terminal_bar, **kwargs)
        if not emit(report.to_dict(), args.output):
            LoopPrinter("sync", args.log_format, heartbeat).emit(report)
            for problem in report.unhealthy:
                print(f"not healthy: {problem}", file=sys.stderr)
        return report.exit_code
    stop = threading.Event()
    # SIGTERM (systemd, Kubernetes) ends the loop between passes, never mid-reconcile
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    printer = LoopPrinter("sync", "json" if args.output == "json" else args.log_format, heartbeat)
    printer.info(f"syncing {args.repo} {args.branch}:{args.path} every {interval:g}s into {store.root}")
    try:
        sync_loop(source, store, interval, stop, printer, **kwargs)
    except KeyboardInterrupt:
        pass
    return 0
