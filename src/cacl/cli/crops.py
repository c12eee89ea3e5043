"""``cacl crops SITE OUT``: cut a site's tracked boxes into a training folder with tracklets."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "crops",
        help="cut the tracked boxes of a site (videos or MOT sequences + tracks) into crops",
        description=(
            "Read a site (one folder per camera with a video or a MOTChallenge image sequence, "
            "and the tracker's output as tracks.txt, gt/gt.txt or det/det.txt in MOTChallenge "
            "text format), decode every camera once and write OUT/<camera>/<camera>_t<track>_"
            "f<frame>.jpg plus OUT/tracklets.csv (camera, tracklet, frame, time, box of every "
            "crop), which cacl train reads. Killed, it continues where it stopped."
        ),
    )
    parser.add_argument("site", help="the site folder (one sub-folder per camera)")
    parser.add_argument("out", help="output folder (new, or one an earlier cacl crops began)")
    parser.add_argument(
        "--every", type=int, default=1, metavar="N", help="keep every N-th box of a track (1)"
    )
    parser.add_argument(
        "--max-per-track",
        type=int,
        default=0,
        metavar="K",
        help="at most K crops per track, evenly spaced (0: all)",
    )
    parser.add_argument(
        "--min-height", type=int, default=0, metavar="H", help="skip boxes under H pixels high"
    )
    parser.add_argument(
        "--min-conf",
        type=float,
        default=None,
        metavar="C",
        help="skip boxes whose confidence (column 7) is below C",
    )
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the crops (95)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from cacl.data.site import CropOptions, cut_site

    options = CropOptions(
        every=args.every,
        max_per_track=args.max_per_track,
        min_height=args.min_height,
        min_conf=float("-inf") if args.min_conf is None else args.min_conf,
        quality=args.quality,
    )
    summary = cut_site(args.site, args.out, options, progress=not args.no_progress)
    for name, cam in summary["cameras"].items():
        skipped = ", ".join(f"{n} {why}" for why, n in cam["skipped"].items()) or "none"
        print(
            f"{name}: {cam['crops']} crops ({cam['written']} written now, {cam['already_there']} "
            f"already there) from {cam['tracks']} ({cam['format']}, tracks {cam['tracker']}), "
            f"{cam['frames_decoded']} frames decoded; skipped: {skipped}"
        )
    clock = (
        f"one site clock from {summary['origin']}"
        if summary["clock"] == "site"
        else "a clock per camera (no start times: only within-camera times are used)"
    )
    print(
        f"{args.out}: {summary['crops']} crops of {summary['tracklets']} tracklets from "
        f"{len(summary['cameras'])} cameras, {clock}; {summary['seconds']:.1f} s"
    )
    return 0
