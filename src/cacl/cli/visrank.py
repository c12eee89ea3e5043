"""``cacl visrank CHECKPOINT``: pictures of queries and their top gallery matches, plus a CSV."""

from __future__ import annotations

import argparse
from pathlib import Path

from cacl.cli.options import add_model_run_options, load_model_and_data


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "visrank",
        help="pictures of the best, worst or random queries and their top matches, and a CSV",
        description=(
            "Rank the gallery for each query as the evaluation does (branch 1, squared Euclidean "
            "distance, same-identity same-camera gallery images removed), choose queries by their "
            "average precision and write one PNG per query (the query, then its top matches with "
            "a green border for a true match and a red one for a false match) and ranked.csv "
            "(query, rank, gallery file, distance, match)."
        ),
    )
    parser.add_argument("checkpoint", help="a checkpoint file or a run folder (uses best.pt)")
    parser.add_argument("--which", choices=("best", "worst", "random"), default="best")
    parser.add_argument("--n", type=int, default=20, help="number of queries (default 20)")
    parser.add_argument("--top", type=int, default=10, help="matches shown per query (default 10)")
    parser.add_argument(
        "--output",
        default=None,
        help="folder for the PNGs and ranked.csv (default: visrank-WHICH beside the checkpoint, "
        "or inside the run folder)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --which random")
    add_model_run_options(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.report.visrank import VisrankError, compute_ranking, write_visrank

    if args.n < 1 or args.top < 1:
        raise VisrankError(f"--n and --top must be at least 1, got {args.n} and {args.top}")
    net, cfg, meta, dataset, device = load_model_and_data(args)
    ranking = compute_ranking(
        net,
        dataset,
        height=cfg.data.height,
        width=cfg.data.width,
        device=device,
        batch_size=args.batch_size,
        workers=args.workers,
        progress=not args.no_progress,
    )
    output = args.output or Path(meta["_path"]).parent / f"visrank-{args.which}"
    out = write_visrank(
        ranking, output, which=args.which, n=args.n, top=args.top, seed=args.seed, root=dataset.root
    )
    result = ranking.result
    print(
        f"{dataset.name}: {len(dataset.query)} queries, {len(dataset.gallery)} gallery images; "
        f"mAP {result.mAP:.4f}  rank-1 {result.rank(1):.4f}"
    )
    aps = ", ".join(f"{row.ap:.3f}" for row in out.rows[:10])
    more = " ..." if len(out.rows) > 10 else ""
    print(f"{len(out.rows)} {args.which} queries (AP {aps}{more})")
    print(f"pictures: {out.pictures[0].parent}  csv: {out.csv}")
    return 0
