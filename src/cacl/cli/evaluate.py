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
    parser.add_argument(
        "--st",
        action="store_true",
        help="also rank by appearance and time: a camera-pair transit-time model learned from "
        "the run's last pseudo labels, fused with the appearance similarity (needs the times of "
        "the training and test images: a site's crops, times.csv, Market / Duke names)",
    )
    parser.add_argument(
        "--st-source",
        choices=("pseudo", "truth"),
        default="pseudo",
        help="learn the transit times from the run's pseudo labels (default) or, to compare, "
        "from the training set's true identities",
    )
    parser.add_argument(
        "--times",
        choices=("auto", "file", "market", "duke"),
        default="auto",
        help="where the test images' times come from: times.csv beside them, else the names "
        "of Market-1501 / DukeMTMC-reID (auto, default), or only one of these",
    )
    add_model_run_options(parser, progress=False)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.errors import CaclError
    from cacl.evaluation.network import network_features, score_distances, squared_euclidean

    net, cfg, _, dataset, device = load_model_and_data(args)
    if not dataset.has_test_split:
        raise CaclError(
            f"{dataset.name} ({cfg.data.root}) has no query / gallery split to evaluate on; "
            "give a labelled one with --data NAME --root FOLDER (e.g. --data market1501)"
        )
    if args.st:
        from cacl.data.times import require_times

        # refuse before the extraction, which is the long part
        q_times = require_times(dataset, "query", args.times)
        g_times = require_times(dataset, "gallery", args.times)
        train_times = require_times(dataset, "train")
    qf, gf = network_features(
        net,
        dataset,
        height=cfg.data.height,
        width=cfg.data.width,
        device=device,
        batch_size=args.batch_size,
        workers=args.workers,
        branch=args.branch,
    )
    if args.rerank:
        from cacl.evaluation import re_ranking_features

        metrics = score_distances(re_ranking_features(qf, gf), dataset)
    else:
        metrics = score_distances(squared_euclidean(qf, gf), dataset)
    which = "branch 2 (gray)" if args.branch == 2 else "branch 1"
    print(
        f"{dataset.name}: {len(dataset.query)} queries, {len(dataset.gallery)} gallery images, "
        f"{which}{', re-ranked' if args.rerank else ''}"
    )
    if not args.st:
        print(_line(metrics))
        print(json.dumps(metrics))
        return 0
    from cacl.temporal.run import run_transit, st_distances

    model = run_transit(args.checkpoint, dataset, args.st_source, train_times)
    pairs = int((model.counts.sum(2) > 0).sum())
    print(
        f"transit model ({args.st_source} labels): {int(model.counts.sum())} transits over "
        f"{pairs} camera pairs, horizon {model.horizon_s:.0f} s, bins of {model.bin_s:g} s"
    )
    fused = score_distances(
        st_distances(
            qf,
            gf,
            [s.camid for s in dataset.query],
            q_times,
            [s.camid for s in dataset.gallery],
            g_times,
            model,
            rerank=args.rerank,
        ),
        dataset,
    )
    print("appearance         " + _line(metrics))
    print("appearance + time  " + _line(fused))
    print(
        json.dumps(
            {
                **fused,
                "appearance": metrics,
                "transit_source": args.st_source,
                "rerank": args.rerank,
            }  # fmt: skip
        )
    )
    return 0


def _line(m: dict) -> str:
    return (
        f"mAP {m['mAP']:.4f}  rank-1 {m['rank1']:.4f}  rank-5 {m['rank5']:.4f}  "
        f"rank-10 {m['rank10']:.4f}  mINP {m['mINP']:.4f}"
    )
