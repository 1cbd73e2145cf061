"""`controller watch DIR`: reconcile the manifests in DIR whenever they change."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from controller.cli.common import add_data_root_arg, add_store_arg, resolve_store
from controller.errors import InvalidInput
from controller.gitops.sync import parse_interval
from controller.gitops.watch import WatchPass, watch_directory
from controller.progress import terminal_bar


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("watch", help="reconcile a manifest directory on every change",
                       description=("Reconcile DIR now, then again after each burst of file changes (debounced). "
                                    "An invalid save is reported and skipped; the last good state keeps serving."))
    p.add_argument("directory", type=Path, metavar="DIR", help="manifest directory")
    p.add_argument("--debounce", default="1s", help="quiet time before reconciling (default 1s; e.g. 500ms, 2s)")
    p.add_argument("--webhook", metavar="URL", help="POST JSON on each transition (also $CONTROLLER_WEBHOOK)")
    add_store_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.directory.is_dir():
        raise InvalidInput("expected a directory of manifests to watch", file=args.directory)
    debounce = parse_interval(args.debounce, "--debounce")
    store = resolve_store(args, args.directory)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"watching {args.directory} (debounce {debounce:g}s, store {store.root}); Ctrl-C stops",
          file=sys.stderr)
    try:
        watch_directory(args.directory, store, stop, debounce=debounce, data_roots=args.data_root,
                        webhook=args.webhook, on_pass=_print, progress=terminal_bar)
    except KeyboardInterrupt:
        stop.set()
    return 0


def _print(result: WatchPass) -> None:
    stream = sys.stderr if result.error else sys.stdout
    print("\n".join(result.lines()), file=stream, flush=True)
