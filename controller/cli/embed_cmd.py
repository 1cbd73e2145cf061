"""`controller embed PATH`: embed a manifest's corpus into the store's cache ahead of a build.

Resumable (a rerun skips everything already cached; SIGTERM stops after the
batches in flight are kept), shardable across
machines (`--shard i/N`) and parallel on one machine (`--workers N`). The next
`reconcile` of the same model then embeds nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Iterator

from controller.cliargs import (EXIT_OK, add_data_root_arg, add_output_arg, add_store_arg, add_verb, emit,
                                resolve_store, stores_into)
from controller.errors import InvalidInput


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "embed", help="embed a manifest's corpus into the embedding cache (resumable batch job)",
                 description=(
                     "Embed every document of the manifest's model that the store's embedding cache lacks.\n"
                     "A rerun after a crash or a kill resumes where it stopped; the next reconcile of the\n"
                     "same model embeds nothing. Takes the manifest, not an index name: the model to embed\n"
                     "with is in the manifest before any version of it is built."),
                 examples="""
                     controller embed index.yaml
                     controller embed index.yaml --shard 2/8          # one of 8 disjoint shards
                     controller embed index.yaml --workers 2 -o json
                 """)
    p.add_argument("path", type=Path, help="manifest file or directory")
    p.add_argument("--index", metavar="NAME", help="the index to embed when PATH holds several")
    p.add_argument("--shard", default="0/1", metavar="i/N",
                   help="embed only shard i of N (by content hash), e.g. $JOB_COMPLETION_INDEX/4")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="processes embedding side by side, this one included (default 1)")
    add_output_arg(p)
    add_store_arg(p)
    add_data_root_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import controller as api
    from controller.engine.embedding import embed_job, parse_shard
    from controller.progress import terminal_bar

    shard = parse_shard(args.shard)
    manifests = api.load_manifests(args.path, args.data_root)
    if args.index is not None:
        manifests = [m for m in manifests if m.name == args.index]
        if not manifests:
            raise InvalidInput(f"no index named {args.index!r} in {args.path}", field="--index", value=args.index)
    store = resolve_store(args)
    with _stop_on_signals() as stop:
        reports = [embed_job(m, store, shard=shard, workers=args.workers, progress=terminal_bar, stop=stop.is_set)
                   for m in manifests]
    if not emit({"store": str(store.root), "jobs": reports}, args.output):
        for r in reports:
            rate = f" ({r['docsPerSecond']:,.0f} docs/s)" if r["docsPerSecond"] else ""
            print(f"{r['index']} shard {r['shard']}: {r['documents']} documents, {r['hits']} cached "
                  f"({r['hitRate']:.0%}), {r['embedded']} embedded in {r['seconds']:.1f}s{rate}")
        stores_into(store)
    return EXIT_OK


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM (Kubernetes evicting a pod) or Ctrl-C: send nothing new, keep what is in flight, exit 1.

    A second signal ends the process at once (losing at most the batches in flight).
    The previous handlers come back afterwards (`main()` may be called in-process).
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # only the main thread may handle signals; a caller's thread keeps its own
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        stop.set()
        sys.stderr.write(f"\ncontroller embed: {signal.Signals(signum).name}: keeping the batches in flight, "
                         "then stopping (send it again to stop at once)\n")

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
