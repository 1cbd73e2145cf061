"""`controller calibrate NAME`: per-statistic thresholds from reference-vs-reference splits."""

from __future__ import annotations

import argparse

from controller.cliargs import add_output_arg, add_store_arg, add_verb, emit, resolve_store, stores_into
from controller.errors import InvalidInput

#: kept equal to controller.checks.drift.DEFAULT_SPLITS by a test (importing it here would load scipy)
DEFAULT_SPLITS = 200


#: most random splits: 100,000 pins the 5% quantile of each null distribution within a fraction of a percent
MAX_SPLITS = 100_000


def register(sub: argparse._SubParsersAction) -> None:
    p = add_verb(sub, "calibrate",
                 help="drift thresholds for a false-alarm rate, from the stable version's vectors",
                 examples="""
                     controller calibrate quickstart
                     controller calibrate quickstart --metrics psi,mmd --splits 100 --no-save -o json
                 """)
    p.add_argument("name", help="index name")
    p.add_argument("--false-alarm", type=float, default=0.05, help="target false-alarm rate (default 0.05)")
    p.add_argument("--splits", type=int, default=DEFAULT_SPLITS,
                   help=f"random half-vs-half splits (default {DEFAULT_SPLITS})")
    p.add_argument("--metrics", help="comma-separated statistics (default: every registered one)")
    p.add_argument("--version", help="version to calibrate on (default: stable)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random splits (default 0)")
    p.add_argument("--no-save", action="store_true", help="print only; do not store calibration.json")
    add_output_arg(p)
    add_store_arg(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controller.engine.drift import calibrate_index
    from controller.progress import terminal_bar

    if not 0.0 < args.false_alarm < 1.0:
        raise InvalidInput(f"--false-alarm must be between 0 and 1 (exclusive), got {args.false_alarm}",
                           field="--false-alarm", value=args.false_alarm)
    if not 2 <= args.splits <= MAX_SPLITS:  # 1e8 ran for hours: the null quantile is settled long before
        raise InvalidInput(f"--splits must be from 2 to {MAX_SPLITS}", field="--splits", value=args.splits)
    if args.seed < 0:
        raise InvalidInput(f"--seed must be at least 0, got {args.seed}", field="--seed", value=args.seed)
    store = resolve_store(args)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics is not None else None
    if metrics == []:  # "" or ",": not the default set, which it silently meant
        raise InvalidInput("--metrics names no statistic", field="--metrics", value=args.metrics)
    record = calibrate_index(store, args.name, version=args.version, metrics=metrics, splits=args.splits,
                             false_alarm=args.false_alarm, seed=args.seed, save=not args.no_save,
                             progress=terminal_bar("calibrate"))
    if emit(record, args.output):
        return 0
    print(f"{args.name}/{record['version']}: {record['splits']} random halves of {record['rows']} vectors, "
          f"false alarm {record['falseAlarm']:g}")
    print(f"  {'statistic':<16} {'threshold':>10} {'default':>9} {'null median':>12} {'null max':>10} "
          f"{'default FA':>10} {'|effect| null':>14}")
    for name, c in record["statistics"].items():
        effect = "-" if c["effectNull"] is None else f"{c['effectNull']:.4g}"
        print(f"  {name:<16} {c['threshold']:>10.4g} {c['defaultThreshold']:>9.4g} {c['nullMedian']:>12.4g} "
              f"{c['nullMax']:>10.4g} {c['defaultFalseAlarm']:>10.0%} {effect:>14}")
    for name, why in record["skipped"].items():
        print(f"  {name:<16} skipped: {why}")
    if not args.no_save:
        print(f"stored in {store.index_dir(args.name) / 'calibration.json'}; gates with max: auto use it")
        stores_into(store)
    return 0
