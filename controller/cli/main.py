"""`controller`: the command line. One module per verb; this file only dispatches.

Exit codes: 0 ok / no changes, 1 error, 2 invalid input; with
`reconcile --dry-run --detailed-exitcode`, 2 means changes are pending.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from controller import __version__
from controller.errors import ControllerError, InvalidInput

VERBS = ("reconcile", "status", "history", "rollback", "query", "schema", "drift", "calibrate", "report", "sync", "watch", "diff", "apply", "suspend",
         "operator", "crd")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controller",
        description="Declarative lifecycle controller for vector-search indexes under embedding drift.")
    parser.add_argument("--version", action="version", version=f"controller {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        module = import_module(f"controller.cli.{verb}_cmd")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ControllerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
