"""Sensitivity of online decisions: A/B on CTR against team-draft interleaving, and A/A false aborts.

SciFact's 300 test queries, rankings by exact cosine search on the shared
vectors. Stable: all-MiniLM-L6-v2 (nDCG@10 0.645). Candidates: the same model
made slightly worse by seeded Gaussian noise (sigma 0.015-0.05 per coordinate)
added to the document vectors, which covers nDCG@10 gaps of about 0.01-0.09,
plus the projection to 32 dimensions (gap 0.31) for contrast. Each
candidate's nDCG@10 is computed by the golden scorer and printed. Users click
by the position-biased cascade model (controller.simulate.clicks) on the test
qrels, under the four click models of Hofmann, Whiteson and de Rijke (2011):
perfect, navigational, informational, almost random.

Small gaps take A/B tests hundreds of thousands of queries, so the rollouts
draw from the click model's exact per-query probabilities
(controller.simulate.exact: P(a click) for A/B, P(stable wins / candidate
wins / tie) of a team-draft list for interleaving), which have exactly the
distribution of click-by-click simulation (tested). Every look is judged by
the service's own decisions.

For each (candidate, click model), `runs` seeded rollouts of each design, on
the same kind of query stream (each query drawn uniformly from the 300):
  A/B         each query goes to stable or candidate (50/50: the split that
              needs the fewest queries); gate ctr maxDrop 0, minSamples 10:
              fails once the always-valid CS of CTR(candidate) - CTR(stable)
              lies below 0
  interleave  every query gets a team-draft list; fails once the exact
              always-valid CS of the candidate's win share lies below 0.5
              (margin 0), minQueries 10
Both: alpha 0.05, "significantly worse" with no tolerance on either side,
looks every 5 queries and past 250 every 2% of the queries so far.
The A/B interval is a normal mixture tuned to a horizon (default 10 x
minSamples = 100 per arm, loose for long runs); so as not to handicap A/B,
each stream is also judged with horizons 1e3, 1e4, 1e5 per arm and the best
median is reported too. The interleaving test (exact Beta-Binomial, Beta(1/2,
1/2) mixture) is likewise loose for long runs, so its stream is also judged
by the A/B gate's own machinery, the normal-mixture CS of the mean per-query
preference (+1 candidate won, -1 stable won, 0 tie) at the same horizons in
queries; the "best" ratio compares each design at its best tuning.
"Queries to a correct decision" counts all queries of a rollout (both A/B
arms) until the first look that failed the candidate; a rollout that passed
it (wrong) or had no decision by MAX_QUERIES counts as never (printed).
Goal: interleaving needs >= 5x fewer queries (median).

Sizing: E5 (one nDCG point better) against MiniLM, queries until it passes,
for the margins and tolerances a step would use (default click model).

Then the A/A check (click-by-click): 200 rollouts of MiniLM against itself,
20 looks each: false-abort rate of the sequential gate vs a naive fixed 95%
interval checked at every look.

Run: .venv/bin/python bench/bench_online.py [runs]   (SCIFACT_DIR overrides the data path)
"""
from __future__ import annotations

import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from controller.core.online import FAILED, PASSED, OnlineGate
from controller.simulate.clicks import CLICK_MODELS, ClickModel
from controller.simulate.exact import Outcome, Pair, ab_runs, interleave_run, interleave_runs, look_points
from controller.simulate.rankings import ndcg_at, scifact_rankings
from controller.simulate.rollouts import run_ab

DATA = Path(os.environ.get("SCIFACT_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"))
#: Candidates: (label, scifact_rankings keyword arguments); noise is per coordinate of the document vectors
CANDIDATES = [(f"docs+N(0,{s}^2)", {"doc_noise": s}) for s in (0.015, 0.02, 0.03, 0.04, 0.05)] + \
    [("projected to 32d", {"project_to": 32})]
LOOK_EVERY = 5
GROWTH = 0.02  # past 250 queries, look every 2% of the queries so far
MIN = 10
MAX_QUERIES = 1_000_000
#: Mixture horizons. A/B: samples per arm, None = the gate's default (10 x minSamples). Interleaving:
#: queries, None = the service's exact Beta-Binomial test, numbers = normal mixture on the per-query preference.
HORIZONS = (None, 1e3, 1e4, 1e5)


def median_queries(outcomes: Sequence[Outcome]) -> float:
    """Median queries to failing the candidate; a pass or no decision counts as never (inf)."""
    return statistics.median(o.queries if o.decision == FAILED else math.inf for o in outcomes)


def _fmt(q: float) -> str:
    return f">{MAX_QUERIES:,}" if math.isinf(q) else f"{q:,.0f}"


def _ratio(ab: float, il: float) -> str:
    if math.isinf(il):
        return "n/a"
    return f">={MAX_QUERIES / il:.1f}x" if math.isinf(ab) else f"{ab / il:.1f}x"


def sensitivity(pair: Pair, runs: int) -> tuple[list[float], list[float], int, int, int]:
    """Median queries per horizon for A/B and interleaving; rollouts failed (A/B, IL) and A/B passed."""
    gate = OnlineGate("ctr", max_drop=0.0, min_samples=MIN)
    looks = look_points(LOOK_EVERY, GROWTH, MAX_QUERIES)
    ab = [ab_runs(pair, gate, looks, seed=s, horizons=HORIZONS) for s in range(runs)]
    il = [interleave_runs(pair, looks, seed=s, min_queries=MIN, horizons=HORIZONS) for s in range(runs)]
    ab_medians = [median_queries([run[h] for run in ab]) for h in range(len(HORIZONS))]
    il_medians = [median_queries([run[h] for run in il]) for h in range(len(HORIZONS))]
    return (ab_medians, il_medians, sum(run[0].decision == FAILED for run in ab),
            sum(run[0].decision == FAILED for run in il), sum(run[0].decision == PASSED for run in ab))


def _best(medians: list[float]) -> str:
    h = min(range(len(HORIZONS)), key=lambda i: medians[i])
    return f"{_fmt(medians[h])} ({'dflt' if HORIZONS[h] is None else f'{HORIZONS[h]:.0e}'})"


def sensitivity_table(stable, golden, runs: int) -> None:
    base = ndcg_at(golden, stable)
    print(f"{runs} seeded rollouts per cell; alpha 0.05; minSamples/minQueries {MIN}; looks every {LOOK_EVERY} "
          f"queries (every {GROWTH:.0%} past 250); cap {MAX_QUERIES:,} queries")
    print("median queries to failing the candidate. default: the service's tests; best: each design at its "
          "best mixture horizon (in brackets)")
    print(f"{'candidate':<18} {'nDCG@10':>7} {'gap':>5} {'click model':<13} {'dCTR':>7} {'share':>5} "
          f"{'A/B':>10} {'IL':>10} {'ratio':>7} {'A/B best':>17} {'IL best':>17} {'ratio':>7}  "
          f"failed A/B,IL; A/B passed")
    for label, kwargs in CANDIDATES:
        candidate, _ = scifact_rankings(DATA, **kwargs)
        ndcg = ndcg_at(golden, candidate)
        for name, model in CLICK_MODELS.items():
            t = time.perf_counter()
            pair = Pair.build(stable, candidate, golden.qrels, model)
            ab, il, ab_failed, il_failed, ab_passed = sensitivity(pair, runs)
            print(f"{label:<18} {ndcg:>7.3f} {base - ndcg:>5.3f} {name:<13} {pair.ctr_gap:>+7.4f} "
                  f"{pair.win_share:>5.3f} {_fmt(ab[0]):>10} {_fmt(il[0]):>10} {_ratio(ab[0], il[0]):>7} "
                  f"{_best(ab):>17} {_best(il):>17} {_ratio(min(ab), min(il)):>7}  "
                  f"{ab_failed}/{runs},{il_failed}/{runs}; {ab_passed}   ({time.perf_counter() - t:.1f}s)", flush=True)


def aa(stable, qrels, rollouts: int = 200, looks: int = 20, every: int = 100) -> tuple[float, float]:
    gate = OnlineGate("ctr", max_drop=0.0, min_samples=100)
    runs = [run_ab(stable, stable, qrels, gate=gate, seed=s, look_every=every, max_queries=looks * every,
                   until_naive=True) for s in range(rollouts)]
    return (sum(r.decision == FAILED for r in runs) / rollouts,
            sum(r.naive_failed_at is not None for r in runs) / rollouts)


def sizing(stable, golden, runs: int = 20) -> None:
    """E5 against MiniLM (a real, small improvement): queries until the candidate passes, default clicks."""
    e5, _ = scifact_rankings(DATA, "multilingual-e5-small-q4")
    pair = Pair.build(stable, e5, golden.qrels, ClickModel())
    looks = look_points(20, GROWTH, 100_000)
    print(f"sizing: candidate multilingual-e5-small-q4 (nDCG@10 {ndcg_at(golden, e5):.3f}) vs MiniLM, default "
          f"click model (dCTR {pair.ctr_gap:+.4f}, IL share {pair.win_share:.3f}), {runs} rollouts, looks every "
          f"20 queries ({GROWTH:.0%} growth), median queries to 'passed' (cap 100,000):")
    for margin in (0.1, 0.05, 0.0):
        il = [interleave_run(pair, looks, seed=s, min_queries=100, margin=margin) for s in range(runs)]
        print(f"  interleave margin {margin}: {statistics.median(o.queries for o in il):,.0f} "
              f"({sum(o.decision == PASSED for o in il)}/{runs} passed)")
    for max_drop in (0.05, 0.02):
        gate = OnlineGate("ctr", max_drop=max_drop, min_samples=100)
        ab = [ab_runs(pair, gate, looks, seed=s)[0] for s in range(runs)]
        print(f"  A/B 50/50 ctr maxDrop {max_drop}: {statistics.median(o.queries for o in ab):,.0f} "
              f"({sum(o.decision == PASSED for o in ab)}/{runs} passed)")


def main(runs: int = 30) -> None:
    t = time.perf_counter()
    stable, golden = scifact_rankings(DATA)
    print(f"SciFact, {len(stable)} test queries; stable all-MiniLM-L6-v2 nDCG@10 {ndcg_at(golden, stable):.3f}")
    sensitivity_table(stable, golden, runs)
    sizing(stable, golden)
    seq, naive = aa(stable, golden.qrels)
    print("A/A, 200 rollouts x 20 looks (every 100 queries), ctr maxDrop 0, alpha 0.05: "
          f"false aborts sequential {seq:.3f}, naive fixed 95% interval at every look {naive:.3f}")
    print(f"total {time.perf_counter() - t:.0f}s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
