"""``cacl baseline {colorhist,graygrad} DATA`` and ``cacl baseline backbone NAME DATA``:
retrieval with hand-crafted features, or with an untrained backbone's features (the reference
every paper reports before training)."""

from __future__ import annotations

import argparse

from cacl.errors import CaclError

HANDCRAFTED = ("colorhist", "graygrad")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "baseline",
        help="evaluate a baseline: hand-crafted features or an untrained backbone",
        description=(
            "Rank each query's gallery and print mAP and CMC ranks under the Market-1501 "
            "protocol, with colour histograms (colorhist), gray-scale gradient-orientation "
            "histograms (graygrad), or the features of a backbone before any re-ID training "
            "(`cacl baseline backbone NAME DATA`: pooled features, L2-normalised; NAME is a cacl "
            "or timm backbone name, weights from --pretrained). On the synthetic set, colour "
            "alone should do poorly."
        ),
        usage=(
            "cacl baseline {colorhist,graygrad} DATA [--dataset D]\n"
            "       cacl baseline backbone NAME DATA [--pretrained imagenet|none|PATH] "
            "[--height H] [--width W] [--dataset D]"
        ),
    )
    parser.add_argument("method", choices=(*HANDCRAFTED, "backbone"), help="which features")
    parser.add_argument("args", nargs="+", metavar="[NAME] DATA", help="backbone name, dataset")
    parser.add_argument(
        "--dataset",
        default="market1501",
        help="dataset reader (default: market1501, the layout of `cacl synth`)",
    )
    parser.add_argument(
        "--pretrained",
        default="imagenet",
        help="backbone weights: imagenet (default; the name's default weights), none or a file",
    )
    parser.add_argument("--height", type=int, default=256, help="input height (default 256)")
    parser.add_argument("--width", type=int, default=128, help="input width (default 128)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import logging

    from cacl.data import load_dataset

    wanted = 2 if args.method == "backbone" else 1
    if len(args.args) != wanted:
        what = "a backbone NAME and the DATA folder" if wanted == 2 else "only the DATA folder"
        raise CaclError(f"cacl baseline {args.method} takes {what}, got {args.args}")
    dataset = load_dataset(args.dataset, args.args[-1])
    logging.getLogger(__name__).info(
        "%s: %d queries, %d gallery images", args.method, len(dataset.query), len(dataset.gallery)
    )
    if args.method == "backbone":
        label, result = backbone_baseline(args, dataset)
    else:
        from cacl.baselines import BASELINES, evaluate_features

        label, result = args.method, evaluate_features(dataset, BASELINES[args.method])
    print(
        f"{label}: mAP {result['mAP']:.4f}  rank-1 {result['rank1']:.4f}  "
        f"rank-5 {result['rank5']:.4f}  rank-10 {result['rank10']:.4f}"
    )
    return 0


def backbone_baseline(args: argparse.Namespace, dataset) -> tuple[str, dict]:
    """mAP / CMC of the untrained backbone ``args.args[0]``: its pooled features through a fresh
    BN neck (eval mode: the identity), L2-normalised, as a CACL run evaluates before training."""
    from cacl.evaluation.network import network_distances, score_distances
    from cacl.inference.extractor import resolve_inference_device
    from cacl.models import CACLNet

    name = args.args[0]
    net = CACLNet(
        name,
        args.pretrained,
        gray_branch=False,
        predictor=False,
        image_size=(args.height, args.width),
    )
    device = resolve_inference_device(args.device)
    distances = network_distances(
        net.to(device),
        dataset,
        height=args.height,
        width=args.width,
        device=device,
        batch_size=args.batch_size,
    )
    report = net.branch1.backbone.load_report
    weights = args.pretrained if report is None else report.source
    sha = f", sha256 {report.sha256}" if report is not None and report.sha256 else ""
    label = f"{name} untrained ({weights}{sha}; {args.height}x{args.width}, {net.feat_dim}-d)"
    return label, score_distances(distances, dataset)
