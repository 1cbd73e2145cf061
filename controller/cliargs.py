"""What every verb shares: store resolution, output formats, exit codes, help epilogs.

A neutral module under the shells: the verbs in cli/ and the verbs that live in
another shell (gitops/ sync, watch and diff; operator/; serve/) all take their
arguments through it, so none of them imports another shell.

Light on purpose: building the parser imports this module for every verb, so
nothing here may import numpy, a vector backend, pydantic or the engine at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator, TYPE_CHECKING

from controller.errors import ControllerError
from controller.paths import STORE_ENV, store_help

if TYPE_CHECKING:
    from controller.store.fs import Store

#: Exit codes of every verb (the README table is checked against this by a test).
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INVALID = 2
EXIT_DEGRADED = 3  # applied, but a candidate failed its gates / an index is Stalled or Degraded
#: --detailed-exitcode (Terraform): 0 no changes, 1 error (invalid input included), 2 changes pending
EXIT_CHANGES = 2

OUTPUT_FORMATS = ("text", "json", "yaml")


def add_store_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="DIR", help=f"store directory (default: {store_help()})")


def add_output_arg(parser: argparse.ArgumentParser, formats: tuple[str, ...] = OUTPUT_FORMATS) -> None:
    parser.add_argument("-o", "--output", choices=formats, default=formats[0],
                        help=f"output format: {'|'.join(formats)} (default: {formats[0]})")


def add_data_root_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", action="append", default=[], metavar="DIR",
                        help="allow manifest paths under DIR (repeatable; also $CONTROLLER_DATA_ROOTS)")


def add_webhook_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--webhook", metavar="URL",
                        help="POST JSON on each transition (also $CONTROLLER_WEBHOOK); http(s) only")
    parser.add_argument("--allow-private-webhooks", action="store_true", default=None,
                        help="allow loopback and link-local webhook targets, refused by default "
                             "(also $CONTROLLER_ALLOW_PRIVATE_WEBHOOKS=1)")


def add_verb(sub: argparse._SubParsersAction, name: str, *, help: str, description: str | None = None,
             examples: str) -> argparse.ArgumentParser:
    """A verb's parser with an Examples section in its --help."""
    epilog = "examples:\n" + textwrap.indent(textwrap.dedent(examples).strip("\n"), "  ")
    text = description or help[:1].upper() + help[1:] + "."
    # raw formatting keeps the examples' layout; wrap long description lines ourselves
    text = "\n".join(textwrap.fill(line, 100) if line else line for line in text.split("\n"))
    return sub.add_parser(name, help=help, description=text, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def resolve_store(args: argparse.Namespace) -> "Store":
    """--store, then $CONTROLLER_STORE, then the per-user default: the same for every verb and directory."""
    from controller.api import open_store
    from controller.inputs import validate_name

    # every verb naming an index resolves the store first: refuse a bad NAME before any path is built
    if isinstance(getattr(args, "name", None), str):
        validate_name(args.name, field="NAME")
    return with_lock_timeout(open_store(getattr(args, "store", None)), args)


def add_lock_timeout_arg(parser: argparse.ArgumentParser) -> None:
    """Every verb that writes the store: how long to wait while another writer holds its lock."""
    parser.add_argument("--lock-timeout", type=lock_timeout, default=None, metavar="DURATION",
                        help=("wait at most this long for another writer holding the store lock "
                              "(default 5m; e.g. 30s, 2m; 0 fails at once)"))


def lock_timeout(text: str) -> float:
    from controller.durations import parse_duration

    if text.strip().lower().rstrip("mhs") in ("0", "0.0"):
        return 0.0
    try:
        return parse_duration(text, "--lock-timeout")
    except ControllerError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 30s, 5m or 0 (got {text!r})") from None


def with_lock_timeout(store: "Store", args: argparse.Namespace) -> "Store":
    if getattr(args, "lock_timeout", None) is not None:
        store.lock_timeout = args.lock_timeout
    return store


@contextlib.contextmanager
def extra_required(extra: str, verb: str) -> Iterator[None]:
    """Turn a missing optional dependency into a sentence that says what to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        raise ControllerError(
            f"`controller {verb}` needs the {extra!r} extra ({exc.name} is not installed): "
            f"pip install 'embedding-index-controller[{extra}]'") from exc


def index_store(args: argparse.Namespace) -> "Store":
    """The store of a verb that names one index (args.name), which must exist."""
    store = resolve_store(args)
    store.require_index(args.name)
    return store


def print_json(payload: Any) -> None:
    json.dump(payload, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_yaml(payload: Any) -> None:
    import yaml

    # through JSON first so tuples, paths and dates print as plain YAML scalars and lists
    plain = json.loads(json.dumps(payload, default=str))
    sys.stdout.write(yaml.safe_dump(plain, sort_keys=False, width=120, allow_unicode=True))


def emit(payload: Any, output: str) -> bool:
    """Print payload as JSON or YAML when asked; False means the verb prints its text form."""
    if output == "json":
        print_json(payload)
        return True
    if output == "yaml":
        print_yaml(payload)
        return True
    return False


def stores_into(store: "Store") -> None:
    """The last line of a writing verb's text output: where it wrote, so a default is never a surprise."""
    print(f"store: {store.root}")

