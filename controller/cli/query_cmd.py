"""`controller query NAME "text"`: search through the alias, honouring the weight."""

from __future__ import annotations

import argparse
import random
import sys
from typing import TYPE_CHECKING

from controller.cli.common import add_output_arg, add_store_arg, add_verb, emit, index_store
from controller.errors import ControllerError, NotFound

if TYPE_CHECKING:
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "query", help="search an index through its alias",
                 examples="""
                     controller query quickstart "vitamin D deficiency" -k 3
                     controller query quickstart "vitamin D deficiency" --key alice -o json
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("text", help="query text")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--key", help="routing key (e.g. a user id): the same key always hits the same version")
    p.add_argument("--no-record", action="store_true",
                   help="do not add the query vector to the reservoir that `controller drift --recorded` reads")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.core.routing import choose_version
    from controller.embed import capabilities
    from controller.engine.embedders import stored_embedder
    from controller.store import faiss_index

    store = index_store(args)
    routing = store.routing(args.name)
    version = choose_version(routing, key=args.key, draw=random.uniform(0, 100))
    if version is None:
        raise NotFound(f"{args.name} serves no version yet; run `controller reconcile` first")
    meta = store.meta(args.name, version)
    if not capabilities(meta["model"]["provider"]).embeds_text:
        raise ControllerError(f"{args.name}/{version} serves {meta['model']['provider']} vectors: the controller "
                              "cannot embed free text in that model's space; query it from the pipeline that "
                              "made them")
    embedder = stored_embedder(store, args.name, version)
    vector = embedder.embed_queries(["query"], [args.text])
    if not args.no_record:
        _record(store, args.name, version, vector)
    scores, rows = faiss_index.search(store.index(args.name, version), vector, max(args.k, 1),
                                      meta["index"]["metric"])
    ids, _ = store.vectors(args.name, version)
    hits = [{"rank": r + 1, "id": ids[int(row)], "score": float(score)}
            for r, (row, score) in enumerate(zip(rows[0], scores[0])) if row >= 0]
    role = "candidate" if version == routing.candidate else "stable"
    if emit({"name": args.name, "version": version, "role": role, "weight": routing.weight, "hits": hits},
            args.output):
        return 0
    print(f"served by {version} ({role}; candidate weight {routing.weight:g}%)")
    for h in hits:
        print(f"{h['rank']:>3}. {h['id']:<20} {h['score']:.4f}")
    return 0


def _record(store, name: str, version: str, vector: np.ndarray) -> None:
    """Keep the served query for query drift; a read-only store must not fail the query itself."""
    from controller.engine.drift import record_served_query

    try:
        record_served_query(store, name, version, vector)
    except (OSError, ControllerError) as exc:
        print(f"warning: query not recorded for drift monitoring: {exc}", file=sys.stderr)
