"""``cacl report RUN_DIR``: write the run's self-contained HTML report, ``RUN_DIR/report.html``."""

from __future__ import annotations

import argparse

from cacl.cli.options import add_model_run_options, check_model_run_options


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write RUN_DIR/report.html: curves, cluster statistics, CMC and ranked results",
        description=(
            "Write one self-contained HTML page about a run (figures embedded as PNG): mAP and "
            "rank-1 per epoch, each loss term, clusters and outliers, the cluster-size histogram, "
            "NMI / ARI when known, the CMC curve of the best model and a grid of ranked results, "
            "the key numbers of results.json and the resolved config. The best checkpoint is "
            "evaluated once more on the run's dataset; what is unavailable is noted on the page. "
            "cacl train writes this report at the end of every run."
        ),
    )
    parser.add_argument("run_dir", help="a run folder (holding results.json and config.yaml)")
    parser.add_argument("--queries", type=int, default=8, help="queries in the ranked grid")
    parser.add_argument("--top", type=int, default=10, help="matches per query in the grid")
    parser.add_argument("--seed", type=int, default=0, help="seed choosing the grid's queries")
    add_model_run_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.cli import CommandError
    from cacl.distributed import resolve_device
    from cacl.report import make_report

    if args.queries < 1 or args.top < 1:
        raise CommandError(f"--queries and --top must be at least 1: {args.queries}, {args.top}")
    check_model_run_options(args)
    path = make_report(
        args.run_dir,
        data=args.data,
        root=args.root,
        device=resolve_device(args.device),
        queries=args.queries,
        top=args.top,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.no_progress,
    )
    print(f"report: {path}")
    return 0
