"""What every verb shares: store resolution and output formatting."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from controller.errors import ControllerError
from controller.store.fs import STORE_ENV, Store


def add_store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR", help=(
        f"store directory (default: ${STORE_ENV}, else .controller/ next to the manifests for "
        "reconcile, or in the current directory for the other verbs)"))


def add_output_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="output format (default: text)")


def add_data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", action="append", default=[], metavar="DIR",
                        help="allow manifest paths under DIR (repeatable; also $CONTROLLER_DATA_ROOTS)")


def resolve_store(args: argparse.Namespace, manifests: Path | None = None) -> Store:
    if getattr(args, "store", None):
        return Store(Path(args.store))
    if os.environ.get(STORE_ENV):
        return Store(Path(os.environ[STORE_ENV]))
    if manifests is not None:
        base = manifests if manifests.is_dir() else manifests.parent
        return Store(base / ".controller")
    return Store(Path.cwd() / ".controller")


@contextlib.contextmanager
def extra_required(extra: str, verb: str) -> Iterator[None]:
    """Turn a missing optional dependency into a sentence that says what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ControllerError(
            f"`controller {verb}` needs the {extra!r} extra ({exc.name} is not installed): "
            f"pip install 'embedding-index-controller[{extra}]'") from exc


def index_store(args: argparse.Namespace) -> Store:
    """The store of a verb that names one index (args.name), which must exist."""
    store = resolve_store(args)
    store.require_index(args.name)
    return store


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")
