"""``cacl synth OUT``: write the synthetic Market-1501-style dataset."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="generate the synthetic multi-camera pedestrian dataset (Market-1501 layout)",
        description=(
            "Write a procedural dataset in the Market-1501 layout (bounding_box_train, query, "
            "bounding_box_test) where identity lives in shape and texture and every camera has "
            "its own colour cast. The same seed and settings give byte-identical files. An "
            "existing folder holding the same dataset is left as it is; other non-empty folders "
            "are refused."
        ),
    )
    parser.add_argument("out", help="output folder")
    parser.add_argument(
        "--preset",
        default=None,
        choices=("tiny", "small", "market", "site", "site-tiny"),
        help="size: tiny (tests), small (default; CPU training), market (Market-1501 scale); "
        "with --site: site (default: 4 cameras, 3 minutes) or site-tiny (tests)",
    )
    parser.add_argument(
        "--site",
        action="store_true",
        help="write a site instead: camera footage (MOTChallenge image sequences, or videos with "
        "--video), ground truth gt/gt.txt, a tracker-like tracks.txt with faults, and an eval/ "
        "split of other people in the Market-1501 layout (for cacl crops and cacl train)",
    )
    parser.add_argument("--video", action="store_true", help="--site: one MPEG-4 video per camera")
    parser.add_argument(
        "--faults",
        type=float,
        default=None,
        metavar="F",
        help="--site: scale every tracker fault rate (missed boxes, jitter, fragments, identity "
        "switches, false tracks) by F (1: the defaults, 0: a perfect tracker)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--workers", type=int, default=None, help="processes (default: all CPU cores)"
    )
    parser.add_argument("--ids", type=int, default=None, help="training identities")
    parser.add_argument("--test-ids", type=int, default=None, help="test identities")
    parser.add_argument("--cams", type=int, default=None, help="cameras (2-9)")
    parser.add_argument(
        "--images-per-id", type=float, default=None, help="mean training images per identity"
    )
    parser.add_argument(
        "--test-images-per-id",
        type=float,
        default=None,
        help="mean query + gallery images per test identity",
    )
    parser.add_argument("--distractors", type=int, default=None, help="distractor images (0000)")
    parser.add_argument("--junk", type=int, default=None, help="junk images (-1)")
    parser.add_argument(
        "--background",
        default=None,
        choices=("camera", "shared"),
        help="camera (default): each camera sees its own scene; shared: each image's background "
        "style, colours, scale and horizon are drawn from all the cameras'",
    )
    parser.add_argument(
        "--sensor",
        default=None,
        choices=("camera", "shared"),
        help="camera (default): lighting, haze, gamma, blur, noise and JPEG quality per camera; "
        "shared: each image draws them from all the cameras' (the colour cast stays per camera)",
    )
    parser.add_argument(
        "--cast",
        type=float,
        default=None,
        metavar="S",
        help="strength of the cameras' colour casts: 1 (default) as drawn, 0 none, in between "
        "interpolated towards no cast",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a synthetic dataset made with other settings in OUT",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run, preset=None)


def run_site(args: argparse.Namespace) -> int:
    from cacl.data.synth.scene_render import generate_site

    summary = generate_site(
        args.out,
        preset=args.preset or "site",
        seed=args.seed,
        workers=args.workers,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        video=args.video,
        faults=args.faults,
        num_cams=args.cams,
        num_ids=args.ids,
        num_test_ids=args.test_ids,
    )
    c = summary["counts"]
    state = "already present" if summary["skipped"] else f"written in {summary['seconds']:.1f} s"
    print(
        f"{args.out}: {state}; {len(summary['cameras'])} cameras x {c['frames'] // len(summary['cameras'])} "
        f"frames, {summary['visits']} visits, {c['gt_boxes']} true boxes, {c['track_boxes']} "
        f"tracked boxes in {c['tracks']} tracks; eval: {c['query']} queries, "
        f"{c['bounding_box_test']} gallery images"
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from cacl.data.synth import generate

    if args.site:
        return run_site(args)
    if args.preset in ("site", "site-tiny"):
        from cacl.cli import CommandError

        raise CommandError(f"--preset {args.preset} is a site preset: add --site")

    summary = generate(
        args.out,
        preset=args.preset or "small",
        seed=args.seed,
        workers=args.workers,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        num_train_ids=args.ids,
        num_test_ids=args.test_ids,
        num_cams=args.cams,
        images_per_id=args.images_per_id,
        test_images_per_id=args.test_images_per_id,
        num_distractors=args.distractors,
        num_junk=args.junk,
        background=args.background,
        sensor=args.sensor,
        cast=args.cast,
    )
    c = summary["counts"]
    state = "already present" if summary["skipped"] else f"written in {summary['seconds']:.1f} s"
    print(
        f"{args.out}: {state}; train {c['train_ids']} ids / {c['train_images']} images, "
        f"query {c['query_images']}, gallery {c['gallery_images']} "
        f"({c['distractor_images']} distractors, {c['junk_images']} junk), {c['cameras']} cameras"
    )
    return 0
