"""`controller query NAME "text"`: search through the alias, honouring the weight."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from controller.cliargs import add_output_arg, add_store_arg, add_verb, emit, index_store
from controller.errors import ControllerError, InvalidInput

if TYPE_CHECKING:
    import numpy as np


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "query", help="search an index through its alias",
                 examples="""
                     controller query quickstart "vitamin D deficiency" -k 3
                     controller query quickstart "vitamin D deficiency" --key alice -o json
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("text", nargs="?", help="query text (or --vector)")
    p.add_argument("--vector", metavar="FILE.npy", help="search with this query vector (one row) instead of text")
    p.add_argument("--model", metavar="KEY", help="fingerprint key of the --vector's model (see `controller serve`)")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--key", help="routing key (e.g. a user id): the same key always hits the same version")
    p.add_argument("--no-record", action="store_true",
                   help="do not add the query vector to the reservoir that `controller drift --recorded` reads")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.engine.serving import VersionPool, search

    store = index_store(args)
    # the same in-process path as `controller serve`: route, embed with the version's model, search
    # (a precomputed version answers text only when its manifest declares spec.model.queryEmbedder)
    pool = VersionPool(store, [args.name])
    pool.refresh()
    routed = pool.routed(args.name)
    out = search(routed, text=args.text, vector=_vector(args), model=args.model, k=args.k, key=args.key)
    version, routing, role = out.version, routed.routing, out.role
    if not args.no_record:
        _record(store, args.name, version, out.vector)
    hits = [{"rank": h.rank, "id": h.id, "score": h.score} for h in out.hits]
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
        record_served_query(store, name, store.meta(name, version)["fingerprint"], vector)
    except (OSError, ControllerError) as exc:
        print(f"warning: query not recorded for drift monitoring: {exc}", file=sys.stderr)


def _vector(args: argparse.Namespace) -> np.ndarray | None:
    import numpy as np

    if args.vector is None:
        if args.text is None:
            raise InvalidInput("give query text or --vector FILE.npy", field="text")
        return None
    if args.text is not None:
        raise InvalidInput("give query text or --vector, not both", field="--vector", value=args.vector)
    from controller.inputs import load_npy

    # a FIFO, a .npz, strings or objects are refused by load_npy, which reads the header first
    vector = np.asarray(load_npy(args.vector, field="--vector", mmap=False, ndims=(1, 2)), dtype=np.float32)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1:  # a (2, 192) matrix was read as one 384-dimensional query
        raise InvalidInput(f"{args.vector} holds an array of shape {vector.shape}: one query is shape (dim,) "
                           "or (1, dim)", field="--vector", value=args.vector)
    return vector
