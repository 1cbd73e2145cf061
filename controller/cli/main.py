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
import io
import os
import stat
import sys
from contextlib import contextmanager
from importlib import import_module
from typing import Any, Iterable, Iterator, TextIO

from controller import __version__
from controller.cliargs import EXIT_ERROR, EXIT_INVALID
from controller.errors import ControllerError, InvalidInput
from controller.paths import given_store_path, store_help

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
    """Run one verb and return its exit code; output to a reader that has left is discarded, not fatal."""
    with _pipe_safe_output():
        return _run_verb(list(sys.argv[1:] if argv is None else argv))


def _run_verb(argv: list[str]) -> int:
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
        _refuse_empty_store(args)
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        # with --detailed-exitcode (reconcile, diff), 2 means "changes pending": invalid input must not look like it
        return EXIT_ERROR if getattr(args, "detailed_exitcode", False) else EXIT_INVALID
    try:
        return int(args.run(args) or 0)
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


def _refuse_empty_store(args: argparse.Namespace) -> None:
    """`--store ""` (an unset shell variable) is a mistake, not "use the default": some verbs read
    ``args.store or <fallback>`` and would quietly use $CONTROLLER_STORE, a plan's store or the per-user one."""
    store = getattr(args, "store", None)
    if isinstance(store, str):
        given_store_path(store)  # raises InvalidInput for an empty or blank name


class _PipeSafeStream:
    """sys.stdout or sys.stderr on a pipe or socket, made to survive the reader leaving.

    `controller reconcile v3.yaml | head -1`: once the reader has gone, a write fails with EPIPE. Raised to
    the verb, that error cut the verb short and its exit code was lost (3 became 0), and a loop verb
    (`sync`) stopped. Here the first EPIPE points the file descriptor at /dev/null and the verb runs to
    its end, its output discarded, returning its real exit code. Everything else is the stream's own.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except BrokenPipeError:
            self.discard()
            return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except BrokenPipeError:
            self.discard()

    def discard(self) -> None:
        """From now on the stream writes to /dev/null; what it still buffers goes there too, so the flush at
        interpreter exit cannot fail (Python would print an error and exit 120)."""
        _point_at_devnull(self.stream)
        try:
            self.stream.flush()
        except OSError:
            pass  # the buffer's state after the failed write is the stream's business; nothing is shown anyway

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _point_at_devnull(stream: TextIO) -> None:
    """dup2 /dev/null onto the stream's file descriptor (nothing to do for a stream without one)."""
    try:
        fd = stream.fileno()
        devnull = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError):
        return
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _can_lose_its_reader(stream: TextIO) -> bool:
    """Only a real text file on a pipe or a socket can fail with EPIPE. pytest's capture (capsys: no file
    descriptor; capfd: a temporary file) and terminals and files are left exactly as they are."""
    if not isinstance(stream, io.TextIOWrapper) or isinstance(stream, _PipeSafeStream):
        return False
    try:
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


@contextmanager
def _pipe_safe_output() -> Iterator[None]:
    """sys.stdout and sys.stderr wrapped in _PipeSafeStream while a verb runs, then flushed (still wrapped,
    so a reader that left during the last write costs nothing) and put back as they were."""
    saved = {"stdout": sys.stdout, "stderr": sys.stderr}
    wrapped = {name: _PipeSafeStream(stream) for name, stream in saved.items() if _can_lose_its_reader(stream)}
    for name, wrapper in wrapped.items():
        setattr(sys, name, wrapper)
    try:
        yield
    finally:
        for name, wrapper in wrapped.items():
            if getattr(sys, name) is wrapper:  # whoever replaced it meanwhile (a test) restores their own
                setattr(sys, name, saved[name])
            wrapper.flush()


def entry() -> None:
    """The console script: main(), then a last flush that keeps main's exit code if the reader has left."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _point_at_devnull(sys.stdout)  # or Python's own flush at exit fails again and exits 120
    sys.exit(code)


if __name__ == "__main__":
    entry()
