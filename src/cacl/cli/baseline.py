"""``cacl baseline {colorhist,graygrad} DATA``: retrieval with hand-crafted features."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="evaluate a hand-crafted baseline (colour or gray-gradient histogram)",
        description=(
            "Rank each query's gallery with colour histograms (colorhist) or gray-scale "
            "gradient-orientation histograms (graygrad) and print mAP and CMC ranks under the "
            "Market-1501 protocol. On the synthetic set, colour alone should do poorly."
        ),
    )
    parser.add_argument("method", choices=("colorhist", "graygrad"), help="which features")
    parser.add_argument("data", help="the dataset folder (or its parent)")
    parser.add_argument(
        "--dataset",
        default="market1501",
        help="dataset reader (default: market1501, the layout of `cacl synth`)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from cacl.baselines import BASELINES, evaluate_features
    from cacl.data import load_dataset

    dataset = load_dataset(args.dataset, args.data)
    logging.getLogger(__name__).info(
        "%s: %d queries, %d gallery images", args.method, len(dataset.query), len(dataset.gallery)
    )
    result = evaluate_features(dataset, BASELINES[args.method])
    print(
        f"{args.method}: mAP {result['mAP']:.4f}  rank-1 {result['rank1']:.4f}  "
        f"rank-5 {result['rank5']:.4f}  rank-10 {result['rank10']:.4f}"
    )
    return 0
