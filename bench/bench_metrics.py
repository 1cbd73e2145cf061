"""Time controller.checks.golden.evaluate against pytrec_eval on one large run.

Why: the golden gate runs on every plan, so scoring must stay cheap at 10k
queries. Setup: 10,000 queries x 100 retrieved docs (random doc ids from a
50,000-doc corpus, random float scores), graded qrels (0..3) with ~5
relevant docs per query (a third of them inside the run so scores are not
all zero). Metrics: ndcg@10, recall@100, mrr@10, precision@10.

What is timed (best of --repeat, same process):
  ours (cold)   evaluate(golden, qids, doc_matrix, score_matrix, metrics) on a
                freshly built GoldenSet, i.e. including flattening the qrels
                to arrays and building the join table (its first-call cost),
                and hashing the run's doc ids. The headline ratio uses this.
  ours (warm)   the same on a GoldenSet already used once (the controller
                keeps it for old and new index versions), for reference.
  pytrec eval   RelevanceEvaluator(...).evaluate(run_dict) only: evaluator
                already built, run already a dict of dicts. The strictest
                comparison for us.
  pytrec +init  evaluator construction (qrels parsing) + evaluate.
  run->dict     converting the (n, 100) arrays to pytrec_eval's dict-of-dicts,
                reported separately: a caller holding arrays pays it, but it
                is not pytrec_eval's own cost.
pytrec_eval cannot compute mrr@10 (recip_rank has no cutoff), so its side
computes recip_rank on the full run, which is the same work.

Run: python bench/bench_metrics.py [--queries N] [--depth D] [--repeat R]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from controller.checks.golden import GoldenSet, evaluate, golden_digest  # noqa: E402

METRICS = ["ndcg@10", "recall@100", "mrr@10", "precision@10"]
PYTREC_MEASURES = {"ndcg_cut.10", "recall.100", "recip_rank", "P.10"}


def make_case(n_q: int, depth: int, n_docs: int = 50_000, seed: int = 0):
    """Random run arrays and graded qrels with ~5 relevant docs per query."""
    rng = np.random.default_rng(seed)
    qids = [f"q{i}" for i in range(n_q)]
    doc_idx = np.stack([rng.choice(n_docs, size=depth, replace=False) for _ in range(n_q)])
    docs = np.char.add("doc", doc_idx.astype(str))
    scores = rng.random((n_q, depth))
    qrels: dict[str, dict[str, int]] = {}
    for i, q in enumerate(qids):
        n_rel = int(rng.integers(2, 6))
        in_run = docs[i, rng.choice(depth, size=n_rel // 3 + 1, replace=False)]
        outside = [f"doc{j}" for j in rng.choice(n_docs, size=n_rel, replace=False)]
        judged = dict.fromkeys([*in_run.tolist(), *outside])
        qrels[q] = {d: int(rng.integers(0, 4)) if k % 4 == 3 else int(rng.integers(1, 4))
                    for k, d in enumerate(judged)}
    return qids, docs, scores, qrels


def make_golden(qrels: dict[str, dict[str, int]], ids: list[str], digest: str) -> GoldenSet:
    """A fresh GoldenSet (no cached flat arrays/join table) so ours pays the
    cold cost of indexing the qrels, as pytrec_eval's constructor does. The
    digest is computed once outside the timing: it is load-time work that
    pytrec_eval has no counterpart for."""
    return GoldenSet(ids, {}, qrels, digest)


def best_of(repeat: int, fn: Callable[[], object]) -> tuple[float, object]:
    """Minimum wall time over `repeat` runs: least noisy estimate of the cost."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def run_dict(qids, docs, scores) -> dict[str, dict[str, float]]:
    """pytrec_eval's input format."""
    return {q: dict(zip(drow, srow)) for q, drow, srow in
            zip(qids, docs.tolist(), scores.tolist())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--depth", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    import pytrec_eval

    qids, docs, scores, qrels = make_case(args.queries, args.depth)
    n_rel = np.mean([sum(r >= 1 for r in q.values()) for q in qrels.values()])
    print(f"{args.queries} queries x {args.depth} docs, {n_rel:.1f} relevant/query "
          f"(mean), metrics {', '.join(METRICS)}")

    ids = sorted(qrels)
    sorted_qrels, digest = {q: qrels[q] for q in ids}, golden_digest(qrels, {})
    t_ours, ev = best_of(args.repeat, lambda: evaluate(
        make_golden(sorted_qrels, ids, digest), qids, docs, scores, METRICS))
    golden = make_golden(sorted_qrels, ids, digest)
    evaluate(golden, qids, docs, scores, METRICS)
    t_warm, _ = best_of(args.repeat, lambda: evaluate(golden, qids, docs, scores, METRICS))
    t_dict, run = best_of(args.repeat, lambda: run_dict(qids, docs, scores))
    t_init, evaluator = best_of(args.repeat, lambda: pytrec_eval.RelevanceEvaluator(
        qrels, PYTREC_MEASURES))
    t_eval, res = best_of(args.repeat, lambda: evaluator.evaluate(run))

    ref = np.array([res[q]["ndcg_cut_10"] for q in ev.query_ids])
    assert np.allclose(ev.per_query["ndcg@10"], ref, atol=1e-9, rtol=0), "ndcg@10 differs"
    print(f"ours (evaluate, cold GoldenSet) : {t_ours * 1e3:8.1f} ms")
    print(f"ours (evaluate, warm GoldenSet) : {t_warm * 1e3:8.1f} ms (qrels already indexed)")
    print(f"pytrec_eval evaluate only       : {t_eval * 1e3:8.1f} ms")
    print(f"pytrec_eval init + evaluate     : {(t_init + t_eval) * 1e3:8.1f} ms")
    print(f"arrays -> pytrec run dict       : {t_dict * 1e3:8.1f} ms (not counted above)")
    print(f"speed-up vs evaluate only       : {t_eval / t_ours:8.2f}x")
    print(f"speed-up vs init + evaluate     : {(t_init + t_eval) / t_ours:8.2f}x")
    print(f"ndcg@10 mean {ev.metrics['ndcg@10']:.4f} (identical to pytrec_eval to 1e-9)")


if __name__ == "__main__":
    main()
