"""`controller watch DIR`: reconcile the manifests in DIR whenever they change."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from controller.cliargs import (add_data_root_arg, add_lock_timeout_arg, add_store_arg, add_verb, add_webhook_args,
                                resolve_store)
from controller.gitops.loopout import LOG_FORMATS, LoopPrinter
from controller.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "watch", help="reconcile a manifest directory on every change",
                 description=("Reconcile DIR now, then again after each burst of file changes (debounced). "
                              "An invalid save is reported and skipped; the last good state keeps serving."),
                 examples="""
                     controller watch manifests/
                     controller watch manifests/ --debounce 500ms --log-format json
                 """)
    p.add_argument("directory", type=Path, metavar="DIR", help="manifest directory")
    p.add_argument("--debounce", default="1s", help="quiet time before reconciling (default 1s; e.g. 500ms, 2s)")
    add_webhook_args(p)
    p.add_argument("--log-format", choices=LOG_FORMATS, default="text",
                   help="timestamped text lines or one JSON object per line (default: text)")
    add_store_arg(p)
    add_lock_timeout_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.durations import parse_duration
    from controller.gitops.watch import watch_directory
    from controller.progress import terminal_bar

    if not args.directory.is_dir():
        raise InvalidInput("expected a directory of manifests to watch", file=args.directory)
    debounce = parse_duration(args.debounce, "--debounce")
    store = resolve_store(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # every pass of watch follows a file change, so each one prints (heartbeat 0)
    printer = LoopPrinter("watch", args.log_format, heartbeat=0.0)
    printer.info(f"watching {args.directory} (debounce {debounce:g}s, store {store.root}); Ctrl-C stops")
    try:
        watch_directory(args.directory, store, stop, debounce=debounce, data_roots=args.data_root,
                        webhook=args.webhook, allow_private_webhooks=args.allow_private_webhooks,
                        on_pass=printer.emit, progress=terminal_bar)
    except KeyboardInterrupt:
        stop.set()
    return 0
