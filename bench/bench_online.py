"""Sensitivity of online decisions: A/B on CTR against team-draft interleaving, and A/A false aborts.

SciFact's 300 test queries, rankings by exact cosine search on the shared
vectors. Stable: all-MiniLM-L6-v2 (nDCG@10 0.645). Candidate: the same model
degraded by a seeded Gaussian random projection to 16 dimensions (and, for a
smaller gap, 32), re-normalised; its nDCG@10 is printed. Simulated users
follow the position-biased cascade click model (controller.simulate.clicks)
on the test qrels; the four click models of Hofmann, Whiteson and de Rijke
(2011) (perfect, navigational, informational, almost random) and one of
ours (deep-scan noisy: flat examination, eta 0.5, noisy clicks) are run
because the answer depends on how users click.

For each (pair, click model), `runs` seeded rollouts of each design:
  A/B         each query goes to stable or candidate (50/50); gate ctr maxDrop 0,
              minSamples 10, judged by the always-valid CS at every look
  interleave  every query gets a team-draft list; preference test (exact
              Beta-Binomial CS), minQueries 10, judged at every look
Looks: every 5 queries, and past 250 queries every 2% of the queries so far
(the same schedule for both designs).
"Queries to a correct decision" counts all queries of the rollout (both arms
of the A/B) until the first look that failed the degraded candidate; a run
that ends otherwise (passed, or undecided at max) is counted as max and
reported. Goal: interleaving needs >= 5x fewer queries (median).

Sizing: E5 (one nDCG point better) against MiniLM, queries until it passes,
for the margins and tolerances a step would use.

Then the A/A check: 200 rollouts of MiniLM against itself, 20 looks each:
false-abort rate of the sequential gate vs a naive fixed 95% interval checked
at every look.

Run: .venv/bin/python bench/bench_online.py [runs]   (SCIFACT_DIR overrides the data path)
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

from controller.core.online import FAILED, PASSED, OnlineGate
from controller.simulate.clicks import CLICK_MODELS, ClickModel
from controller.simulate.rankings import ndcg_at, scifact_rankings
from controller.simulate.rollouts import run_ab, run_interleave

DATA = Path(os.environ.get("SCIFACT_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
#: Hofmann et al.'s four, plus one of ours where users scan deep (flat examination) and click noisily
MODELS = {**CLICK_MODELS, "deep-scan noisy (ours)": ClickModel(p_rel=0.9, p_nonrel=0.3, eta=0.5, p_stop=0.9)}
DIMS = (16, 32)
LOOK_EVERY = 5
GROWTH = 0.02  # past 250 queries, look every 2% of the queries so far (keeps long A/B runs affordable)
MIN = 10
MAX_QUERIES = 100_000


def _median_queries(results) -> tuple[float, int]:
    queries = [r.queries if r.decision == FAILED else MAX_QUERIES for r in results]
    return statistics.median(queries), sum(r.decision == FAILED for r in results)


def sensitivity(stable, candidate, qrels, model: ClickModel, runs: int) -> tuple[float, float, int, int]:
    gate = OnlineGate("ctr", max_drop=0.0, min_samples=MIN)
    ab = [run_ab(stable, candidate, qrels, gate=gate, seed=s, model=model, look_every=LOOK_EVERY,
                 max_queries=MAX_QUERIES, growth=GROWTH) for s in range(runs)]
    il = [run_interleave(stable, candidate, qrels, seed=s, model=model, min_queries=MIN, look_every=LOOK_EVERY,
                         max_queries=MAX_QUERIES, growth=GROWTH) for s in range(runs)]
    (ab_q, ab_ok), (il_q, il_ok) = _median_queries(ab), _median_queries(il)
    return ab_q, il_q, ab_ok, il_ok


def aa(stable, qrels, rollouts: int = 200, looks: int = 20, every: int = 100) -> tuple[float, float]:
    gate = OnlineGate("ctr", max_drop=0.0, min_samples=100)
    runs = [run_ab(stable, stable, qrels, gate=gate, seed=s, look_every=every, max_queries=looks * every,
                   until_naive=True) for s in range(rollouts)]
    return (sum(r.decision == FAILED for r in runs) / rollouts,
            sum(r.naive_failed_at is not None for r in runs) / rollouts)


def sizing(stable, qrels, golden, runs: int = 20) -> None:
    """E5 against MiniLM (a real, small improvement): queries until the candidate passes, default clicks."""
    e5, _ = scifact_rankings(DATA, "multilingual-e5-small-q4")
    print(f"sizing: candidate multilingual-e5-small-q4 (nDCG@10 {ndcg_at(golden, e5):.3f}) vs MiniLM, default "
          f"click model, {runs} rollouts, looks every 20 queries (2% growth), median queries to 'passed':")
    for margin in (0.1, 0.05):
        il = [run_interleave(stable, e5, qrels, seed=s, min_queries=100, look_every=20, max_queries=30_000,
                             margin=margin, growth=GROWTH) for s in range(runs)]
        print(f"  interleave margin {margin}: {statistics.median(r.queries for r in il):.0f} "
              f"({sum(r.decision == PASSED for r in il)}/{runs} passed)")
    for max_drop in (0.05, 0.02):
        gate = OnlineGate("ctr", max_drop=max_drop, min_samples=100)
        ab = [run_ab(stable, e5, qrels, gate=gate, seed=s, look_every=20, max_queries=30_000, growth=GROWTH)
              for s in range(runs)]
        print(f"  A/B 50/50 ctr maxDrop {max_drop}: {statistics.median(r.queries for r in ab):.0f} "
              f"({sum(r.decision == PASSED for r in ab)}/{runs} passed)")


def main(runs: int = 50) -> None:
    stable, golden = scifact_rankings(DATA)
    qrels = golden.qrels
    print(f"SciFact, {len(stable)} test queries; stable all-MiniLM-L6-v2 nDCG@10 {ndcg_at(golden, stable):.3f}")
    print(f"{runs} seeded rollouts per cell; looks every {LOOK_EVERY} queries; alpha 0.05; "
          f"minSamples/minQueries {MIN}")
    print(f"{'candidate':<34} {'click model':<34} {'A/B ctr':>8} {'interleave':>10} {'ratio':>6}  correct A/B, IL")
    for dim in DIMS:
        candidate, _ = scifact_rankings(DATA, project_to=dim, seed=0)
        label = f"MiniLM->{dim}d (nDCG@10 {ndcg_at(golden, candidate):.3f})"
        for name, model in MODELS.items():
            t = time.perf_counter()
            ab_q, il_q, ab_ok, il_ok = sensitivity(stable, candidate, qrels, model, runs)
            print(f"{label:<34} {name:<34} {ab_q:>8.0f} {il_q:>10.0f} {ab_q / il_q:>5.1f}x  "
                  f"{ab_ok}/{runs}, {il_ok}/{runs}   ({time.perf_counter() - t:.1f}s)", flush=True)
    sizing(stable, qrels, golden)
    seq, naive = aa(stable, qrels)
    print("A/A, 200 rollouts x 20 looks (every 100 queries), ctr maxDrop 0, alpha 0.05: "
          f"false aborts sequential {seq:.3f}, naive fixed 95% interval at every look {naive:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
