"""``cacl eval CHECKPOINT``: mAP and CMC of a trained model on a dataset's query / gallery."""

from __future__ import annotations

import argparse
import json

from cacl.cli.options import add_model_run_options, load_model_and_data


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a checkpoint (or run folder) on a dataset",
        description="Evaluate branch 1 (or, with --branch 2, the gray branch) of a trained model "
        "with the Market-1501 protocol.",
    )
    parser.add_argument("checkpoint", help="a checkpoint file or a run folder (uses best.pt)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking")
    parser.add_argument(
        "--branch",
        type=int,
        choices=(1, 2),
        default=1,
        help="1: the colour branch (the model's output, default); 2: the gray branch on "
        "gray-scale images (a diagnostic of what the training-only branch learned)",
    )
    add_model_run_options(parser, progress=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.errors import CaclError
    from cacl.evaluation.network import evaluate_network

    net, cfg, _, dataset, device = load_model_and_data(args)
    if not dataset.has_test_split:
        raise CaclError(
            f"{dataset.name} ({cfg.data.root}) has no query / gallery split to evaluate on; "
            "give a labelled one with --data NAME --root FOLDER (e.g. --data market1501)"
        )
    metrics = evaluate_network(
        net,
        dataset,
        height=cfg.data.height,
        width=cfg.data.width,
        device=device,
        batch_size=args.batch_size,
        workers=args.workers,
        rerank=args.rerank,
        branch=args.branch,
    )
    which = "branch 2 (gray)" if args.branch == 2 else "branch 1"
    print(
        f"{dataset.name}: {len(dataset.query)} queries, {len(dataset.gallery)} gallery images, "
        f"{which}"
    )
    print(
        f"mAP {metrics['mAP']:.4f}  rank-1 {metrics['rank1']:.4f}  rank-5 {metrics['rank5']:.4f}  "
        f"rank-10 {metrics['rank10']:.4f}  mINP {metrics['mINP']:.4f}"
    )
    print(json.dumps(metrics))
    return 0
