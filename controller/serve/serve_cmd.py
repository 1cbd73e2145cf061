"""`controller serve`: the search service over the store's aliases (extra `[serve]`)."""

from __future__ import annotations

import argparse

from controller.cliargs import add_store_arg, add_verb, extra_required, resolve_store
from controller.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "serve", help="run the search service (HTTP, sticky routing, feedback, metrics)",
                 description="Serve every index of the store (or --index ones) through its alias; "
                             "see docs/serving.md. Reads versions and routing read-only.",
                 examples="""
                     controller serve --port 8080
                     controller serve --store out/qs --index quickstart --port 0
                     curl -s localhost:8080/v1/indexes/quickstart/search -H 'content-type: application/json' -d '{"query": "vitamin"}'
                 """)
    add_store_arg(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    p.add_argument("--index", action="append", default=[], metavar="NAME",
                   help="serve only NAME (repeatable; default: every index in the store)")
    p.add_argument("--events", metavar="DIR", help="event log directory (default: <store>/events)")
    p.add_argument("--no-record", action="store_true",
                   help="do not feed served query vectors to `controller drift --recorded` (read-only store)")
    p.add_argument("--flush-window", type=float, default=1.0, metavar="SECONDS",
                   help="event log flush + fsync interval: at most this much is lost on a crash (default: 1)")
    p.add_argument("--max-body", type=int, default=1 << 20, metavar="BYTES",
                   help="largest request body (default: 1 MiB; larger gets 413)")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="routing record poll interval, besides file events (default: 0.5)")
    p.add_argument("--grace", type=float, default=60.0, metavar="SECONDS",
                   help="keep an unrouted version loaded this long (default: 60)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    for flag, value, low in (("--port", args.port, 0), ("--flush-window", args.flush_window, 0.01),
                             ("--max-body", args.max_body, 1024), ("--poll", args.poll, 0.01), ("--grace", args.grace, 0)):
        if value < low or (flag == "--port" and value > 65535):
            raise InvalidInput(f"{flag} must be at least {low:g}" + (" and at most 65535" if flag == "--port" else ""),
                               field=flag, value=value)
    store = resolve_store(args)
    for name in args.index:
        store.require_index(name)
    with extra_required("serve", "serve"):  # fastapi, uvicorn, prometheus-client
        from controller.serve.app import create_app
        from controller.serve.server import serve_forever
    app = create_app(store.root, args.index or None, events_dir=args.events, record=not args.no_record,
                     max_body=args.max_body, window_s=args.flush_window, poll_s=args.poll, grace_s=args.grace)
    return serve_forever(app, args.host, args.port, log_level=args.log_level)
