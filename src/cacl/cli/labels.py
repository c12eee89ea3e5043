"""``cacl labels``: what people labelled in ``cacl serve``; ``export`` makes an evaluation split."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "labels",
        help="summarise the labels given in cacl serve, or export them as an evaluation split",
        description=(
            "The matches people confirmed in cacl serve's labelling view are kept in "
            "INDEX_DIR/labels.log. 'show' summarises them; 'export' writes an evaluation split "
            "in the Market-1501 layout (query/, bounding_box_test/): one query per identity per "
            "camera, the rest gallery; train on your crops and give data.eval_root=OUT."
        ),
    )
    sub = parser.add_subparsers(title="actions", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="identities, images and who labelled what")
    show.add_argument("index", help="an index folder (cacl index build)")
    show.set_defaults(func=run_show)
    export = sub.add_parser("export", help="write the labelled identities as a Market split")
    export.add_argument("index", help="an index folder (cacl index build)")
    export.add_argument("out", help="output folder (new)")
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    export.add_argument(
        "--no-distractors",
        dest="distractors",
        action="store_false",
        help="leave out the images marked 'not this person' that belong to no identity "
        "(by default they join the gallery as distractors, id 0)",
    )
    export.set_defaults(func=run_export)


def _open(folder: str):
    from cacl.inference.live import LiveIndex
    from cacl.labels.store import LabelStore, index_tracklets

    live = LiveIndex.open(folder, writable=False)
    names = [hit.name for hit in live.names(0, len(live))]
    tracklets = index_tracklets(names, live.index.info.get("root"))
    return live, names, LabelStore(folder, known=set(names), tracklets=tracklets)


def run_show(args: argparse.Namespace) -> int:
    live, names, store = _open(args.index)
    with live:
        labels = store.labels()
        sizes = sorted((len(i.images) for i in labels.identities), reverse=True)
        print(
            f"{args.index}: {len(labels.identities)} identities, {sum(sizes)} labelled images "
            f"of {len(names)}, {len(labels.apart)} pairs marked different; events by "
            + (", ".join(f"{who} {n}" for who, n in sorted(labels.by.items())) or "nobody")
        )
    return 0


def run_export(args: argparse.Namespace) -> int:
    from cacl.labels.export import exported_images, plan_split, write_split

    live, names, store = _open(args.index)
    with live:
        labels = store.labels()
        images = exported_images(labels, args.distractors)
        cameras = {name: live.camera_of(name) for name in images}
        files = plan_split(labels, cameras, args.distractors)
        summary = write_split(files, live.file_of, args.out, overwrite=args.overwrite)
    cams = ", ".join(f"{n} in {k}" for k, n in summary["cameras_per_identity"].items())
    print(
        f"{args.out}: {summary['identities']} identities ({summary['queried_identities']} span "
        f"2+ cameras and are queried; cameras per identity: {cams}), "
        f"{summary['query_images']} queries, {summary['gallery_images']} gallery images "
        f"({summary['distractor_images']} of them distractors)"
    )
    return 0
