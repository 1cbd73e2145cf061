"""`python -m controller.simulate`: simulated users against a running `controller serve`.

Exit codes: 0 every search answered, 1 some failed (the count is printed), 2 bad arguments or files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from controller.errors import ControllerError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m controller.simulate", description=__doc__)
    p.add_argument("--url", required=True, help="base URL of the service, e.g. http://127.0.0.1:8080")
    p.add_argument("--index", required=True, help="index (alias) name to search")
    p.add_argument("--qrels", required=True, help="golden qrels (BEIR TSV or TREC)")
    p.add_argument("--queries", required=True, help="BEIR queries.jsonl with the golden queries' texts")
    p.add_argument("-n", type=int, default=1000, help="number of searches (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--users", type=int, default=1000, help="distinct routing keys (default 1000)")
    for name, default in (("p-rel", 0.9), ("p-nonrel", 0.1), ("eta", 1.0), ("p-stop", 0.5)):
        p.add_argument(f"--{name}", type=float, default=default, help=f"click model {name} (default {default})")
    p.add_argument("--mixed-models", action="store_true",
                   help="users who differ: each gets the model above or one of Hofmann et al.'s four at random")
    p.add_argument("--activity", type=float, default=0.0,
                   help="user i sends a share of the searches proportional to 1/(i+1)^ACTIVITY "
                        "(default 0: uniform; 1: Zipf)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from controller.checks.golden.io import load_golden
    from controller.simulate.clicks import CLICK_MODELS, ClickModel
    from controller.simulate.http import SimulatedUsers
    from controller.simulate.population import Population

    try:
        if args.n < 1:
            raise ValueError(f"-n must be at least 1, got {args.n}")
        if args.users < 1:
            raise ValueError(f"--users must be at least 1, got {args.users}")
        if not (math.isfinite(args.activity) and args.activity >= 0):
            raise ValueError(f"--activity must be a number >= 0, got {args.activity}")
        model = ClickModel(p_rel=args.p_rel, p_nonrel=args.p_nonrel, eta=args.eta, p_stop=args.p_stop)
        population = None
        if args.mixed_models or args.activity:
            models = (model, *CLICK_MODELS.values()) if args.mixed_models else (model,)
            population = Population(users=args.users, models=models, activity=args.activity)
        golden = load_golden(args.qrels, args.queries)
        users = SimulatedUsers(args.url, args.index, golden.query_texts, golden.qrels, model=model,
                               seed=args.seed, k=args.k, users=args.users, population=population)
    except (ControllerError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    stats = users.run(args.n, progress=lambda i, n: print(f"{i}/{n} searches", file=sys.stderr))
    print(json.dumps(stats.to_json()))
    return 1 if stats.failed else 0


if __name__ == "__main__":
    sys.exit(main())
