"""`controller`: the command line. One module per verb; this file only dispatches.

The verb table is a registry, like the plug-in registries: verb -> the dotted
path of its module, loaded with import_module. A verb that is another shell's
entry point lives in that shell (`sync`, `watch`, `diff` in controller.gitops,
`operator` in controller.operator, `serve` in controller.serve), so no shell
imports another one; each verb module gets its argument helpers from the
neutral controller.cliargs.

Start-up stays fast because only the chosen verb's module is imported (the
others appear in `--help` from the light table below), and verb modules
import the engine (numpy, vector backends, scipy, pydantic) inside `run`, not at import.

Exit codes (the README table is the reference; tests/e2e/test_exit_codes.py has one test per row):
  0 ok / no changes; 1 error; 2 invalid input or usage; 3 applied, but a candidate failed its
  gates and was rolled back, or an index is Stalled/Degraded, or `drift` found drift.
  With `reconcile --dry-run --detailed-exitcode` (Terraform): 0 no changes; 1 error, invalid input
  included; 2 changes pending.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

from controller import __version__
from controller.cliargs import EXIT_ERROR, EXIT_INVALID
from controller.errors import ControllerError, InvalidInput
from controller.paths import store_help

#: verb -> (dotted path of its module, one-line help). Order is the order of `controller --help`.
#: Loaded by name (import_module), never imported statically: see the module docstring.
VERBS: dict[str, tuple[str, str]] = {
    "reconcile": ("controller.cli.reconcile_cmd", "reconcile manifests (a file, multi-document file or directory)"),
    "get": ("controller.cli.get_cmd", "one line per index: NAME PHASE STABLE CANDIDATE WEIGHT STEP AGE"),
    "status": ("controller.cli.status_cmd", "show the status of one index or all"),
    "wait": ("controller.cli.wait_cmd", "wait until an index has a condition or a phase (like kubectl wait)"),
    "history": ("controller.cli.history_cmd", "show every alias and weight change of an index"),
    "rollback": ("controller.cli.rollback_cmd", "withdraw the candidate, or move the alias to an earlier version"),
    "promote": ("controller.cli.steps_cmd", "skip the current rollout step, or with --full all of them"),
    "abort": ("controller.cli.steps_cmd", "abort a stepped rollout: the candidate's weight goes to 0"),
    "retry": ("controller.cli.steps_cmd", "start an aborted stepped rollout again from its first step"),
    "query": ("controller.cli.query_cmd", "search an index through its alias"),
    "drift": ("controller.cli.drift_cmd", "query drift: recent or supplied query vectors vs the golden queries"),
    "calibrate": ("controller.cli.calibrate_cmd",
                  "drift thresholds for a false-alarm rate, from the stable version's vectors"),
    "report": ("controller.cli.report_cmd",
                  "drift report (norms, PSI per bin, cosines, neighbour overlap, golden metrics)"),
    "sync": ("controller.gitops.sync_cmd", "reconcile the manifests of a Git branch, once or every --interval"),
    "watch": ("controller.gitops.watch_cmd", "reconcile a manifest directory on every change"),
    "diff": ("controller.gitops.diff_cmd", "show the plan that merging a Git ref would cause"),
    "apply": ("controller.cli.apply_cmd", "apply a plan saved by `reconcile --dry-run --out`"),
    "embed": ("controller.cli.embed_cmd", "embed a manifest's corpus into the embedding cache (resumable batch job)"),
    "suspend": ("controller.cli.suspend_cmd", "stop sync and watch from changing an index until `resume`"),
    "resume": ("controller.cli.suspend_cmd", "let sync and watch reconcile a suspended index again"),
    "schema": ("controller.cli.schema_cmd", "print the JSON Schema of the manifest (or its field table)"),
    "crd": ("controller.cli.crd_cmd", "print the EmbeddingIndex CustomResourceDefinition"),
    "operator": ("controller.operator.operator_cmd", "run the Kubernetes operator (watches EmbeddingIndex resources)"),
    "serve": ("controller.serve.serve_cmd", "run the search service (HTTP, sticky routing, feedback, metrics)"),
    "events": ("controller.cli.events_cmd", "summarise served queries and feedback per version"),
    "completion": ("controller.cli.completion_cmd", "print a bash or zsh completion script"),
}

DESCRIPTION = f"""\
Declarative lifecycle controller for vector-search indexes under embedding drift.

store: --store DIR, else {store_help()}
       (the same for every verb, whatever the current directory).
exit codes: 0 ok; 1 error; 2 invalid input; 3 applied, but a candidate failed its gates
       and was rolled back, or an index is Stalled/Degraded (drift: drift detected).
       reconcile --dry-run --detailed-exitcode: 0 no changes, 1 error, 2 changes pending.
"""

EPILOG = """\
examples:
  controller reconcile examples/quickstart/v1.yaml
  controller get
  controller wait quickstart --for=condition=Ready --timeout 5m
  controller VERB --help
"""


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="controller", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"controller {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    return parser, sub


def build_parser(verbs: list[str] | None = None, placeholders: bool = True) -> argparse.ArgumentParser:
    """The parser with the named verbs fully registered (None: every verb, e.g. for completion);
    with ``placeholders`` the others only carry their help line (for `controller --help`)."""
    parser, sub = _top_parser()
    wanted = list(VERBS) if verbs is None else verbs
    modules = dict.fromkeys(VERBS[v][0] for v in wanted if v in VERBS)
    for module in modules:
        import_module(module).register(sub)
    for verb, (_, help_text) in VERBS.items():
        if placeholders and verb not in sub.choices:
            sub.add_parser(verb, help=help_text, add_help=False)
    # argparse lists choices in insertion order; keep the table's order in --help
    sub._choices_actions.sort(key=lambda a: list(VERBS).index(a.dest) if a.dest in VERBS else 99)
    return parser


def _chosen_verb(argv: list[str]) -> str | None:
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verb = _chosen_verb(argv)
    # a known verb needs only its own parser (20 placeholder parsers cost ~20 ms of start-up)
    parser = build_parser([verb], placeholders=False) if verb in VERBS else build_parser([])
    if not argv:
        parser.print_help()
        return 0
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, usage errors exit 2
        return int(exc.code or 0)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except ControllerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code or EXIT_ERROR
    except OSError as exc:  # the system refused a read or write (a full or read-only store volume): no traceback
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _os_error(exc: OSError) -> str:
    """"<file>: <reason>" as the system gave them (a staging directory that was removed is named as it was)."""
    reason = exc.strerror or str(exc)
    return f"{exc.filename}: {reason}" if exc.filename else reason


def _quiet_broken_pipe() -> int:
    """`controller status | head`: the reader left; exit quietly instead of a traceback at shutdown."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 0


def entry() -> None:
    """The console script: main() with BrokenPipe quiet also while flushing at exit."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        code = _quiet_broken_pipe()
    sys.exit(code)


if __name__ == "__main__":
    entry()
