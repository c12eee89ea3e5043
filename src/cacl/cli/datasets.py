"""``cacl datasets [NAME ROOT]``: list the readers, or read a dataset and print its summary."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "datasets",
        help="list dataset readers, or read one and print its splits",
        description=(
            "Without arguments, list the registered dataset names. With NAME and ROOT, read the "
            "dataset (checking every image) and print identities, images and cameras per split."
        ),
    )
    parser.add_argument("name", nargs="?", help="dataset name, e.g. market1501, msmt17, folder")
    parser.add_argument("root", nargs="?", help="the dataset folder or its parent")
    parser.add_argument(
        "--verify",
        choices=("none", "header", "full"),
        default="header",
        help="how to check images: open headers (default), decode fully, or not at all",
    )
    parser.add_argument(
        "--camera",
        choices=("auto", "regex", "subfolder", "none"),
        default=None,
        help="folder reader only: where camera ids come from",
    )
    parser.add_argument("--cam-regex", default=None, help="folder reader only: camera regex")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.cli import CommandError
    from cacl.data import dataset_names, load_dataset

    if args.name is None:
        print("\n".join(dataset_names()))
        return 0
    if args.root is None:
        raise CommandError("give the dataset ROOT after its NAME")
    options = {}
    if args.camera is not None:
        options["camera"] = args.camera
    if args.cam_regex is not None:
        options["cam_regex"] = args.cam_regex
    dataset = load_dataset(args.name, args.root, verify=args.verify, **options)
    print(dataset.summary())
    return 0
