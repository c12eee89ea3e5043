"""``cacl index build CHECKPOINT IMAGES_DIR OUT``, ``cacl index add OUT DIR``,
``cacl index compact OUT`` and ``cacl index search OUT IMAGE...``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "index",
        help="build or search a gallery index of image features",
        description=(
            "A searchable gallery: 'build' extracts the branch-1 features of every image under a "
            "folder (recursively; unreadable files are skipped and listed) and writes an index "
            "folder; 'search' embeds query images with the same checkpoint and prints the "
            "nearest gallery images with their squared Euclidean distances (as 'cacl eval' "
            "ranks). Small galleries get an exact index, large ones an approximate faiss index."
        ),
    )
    commands = parser.add_subparsers(title="index commands", metavar="ACTION", required=True)

    build = commands.add_parser("build", help="index a folder of gallery images")
    build.add_argument("checkpoint", help="a checkpoint file or a run folder (uses best.pt)")
    build.add_argument("images", help="folder of gallery images (searched recursively)")
    build.add_argument("out", help="index folder to write")
    build.add_argument(
        "--kind",
        default="auto",
        choices=("auto", "flat", "ivf", "hnsw"),
        help="flat: exact; ivf / hnsw: approximate (faiss); auto (default): flat below "
        "--approx-threshold images, else hnsw",
    )
    build.add_argument(
        "--approx-threshold",
        type=int,
        default=None,
        metavar="N",
        help="gallery size from which --kind auto builds an approximate index (default 100000)",
    )
    build.add_argument("--nlist", type=int, default=None, help="ivf cells (default 4 sqrt(N))")
    build.add_argument("--nprobe", type=int, default=None, help="ivf cells searched (nlist / 8)")
    build.add_argument(
        "--ef-search", type=int, default=128, help="hnsw candidates per query (default 128)"
    )
    build.add_argument("--overwrite", action="store_true", help="replace an existing index")
    _add_model_options(build)
    build.add_argument(
        "--workers",
        type=int,
        default=0,
        help="image-reading processes (default 0: on a CPU the network is the bottleneck; "
        "2-4 help with a GPU)",
    )
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(func=run_build)

    add = commands.add_parser(
        "add",
        help="add the images of a folder to an index, without rebuilding it",
        description=(
            "Copy the images under DIR (recursively) into the index folder and append their "
            "features to its journal, in batches that are each durable once reported; images "
            "already indexed (same bytes) are skipped. Camera ids come from --camera, else from "
            "the file names (--cam-regex). A running 'cacl serve' holds the index: add through "
            "its API (POST /api/images) instead."
        ),
    )
    add.add_argument("index", help="an index folder written by 'cacl index build'")
    add.add_argument("images", help="folder of images to add (searched recursively)")
    add.add_argument("--camera", default=None, help="camera id of every added image")
    add.add_argument(
        "--cam-regex",
        default=None,
        help="regular expression whose first group is the camera in a file name "
        "(default: the index's, else _c(\\d+))",
    )
    add.add_argument(
        "--checkpoint", default=None, help="embed with this model instead of the index's own"
    )
    add.add_argument("--chunk", type=int, default=256, help="images per durable batch")
    _add_model_options(add)
    add.set_defaults(func=run_add)

    compact = commands.add_parser(
        "compact",
        help="fold the images added to an index into its snapshot",
        description=(
            "Write the index with every added image as its new snapshot (in place, committed "
            "atomically) and empty its journal: the folder then opens without replaying the "
            "adds, which for an HNSW index means without re-linking every added image. Stop a "
            "running 'cacl serve' on the folder first."
        ),
    )
    compact.add_argument("index", help="an index folder written by 'cacl index build'")
    compact.set_defaults(func=run_compact)

    search = commands.add_parser("search", help="find the nearest gallery images of queries")
    search.add_argument("index", help="an index folder written by 'cacl index build'")
    search.add_argument("queries", nargs="+", metavar="IMAGE", help="query image files")
    search.add_argument("--top", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--json", action="store_true", help="print JSON instead of text")
    search.add_argument(
        "--checkpoint",
        default=None,
        help="embed queries with this model instead of the one the index was built with",
    )
    _add_model_options(search)
    search.set_defaults(func=run_search)


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--batch-size", type=int, default=64)


def run_build(args: argparse.Namespace) -> int:
    from cacl.inference import FeatureExtractor, build_folder_index
    from cacl.inference.index import APPROX_THRESHOLD, MANIFEST, GalleryIndexError

    out = Path(args.out)
    if out.is_dir() and any(out.iterdir()):  # fail before the long extraction, not after it
        if not (out / MANIFEST).is_file():
            raise GalleryIndexError(f"{out} exists and is not a cacl index; not replacing it")
        if not args.overwrite:
            raise GalleryIndexError(f"{out} already holds an index; use --overwrite")
    extractor = FeatureExtractor(
        args.checkpoint, device=args.device, batch_size=args.batch_size, workers=args.workers
    )
    built = build_folder_index(
        extractor,
        args.images,
        progress=False if args.no_progress else None,
        kind=args.kind,
        threshold=args.approx_threshold or APPROX_THRESHOLD,
        nlist=args.nlist,
        nprobe=args.nprobe,
        ef_search=args.ef_search,
    )
    built.index.save(out, overwrite=args.overwrite)
    index = built.index
    print(
        f"indexed {len(index)} images of {index.info['root']} ({index.kind}, {index.dim} dims) "
        f"in {out}: features {built.extract_s:.1f} s, index {built.build_s:.1f} s"
    )
    if built.skipped:
        print(f"skipped {len(built.skipped)} unreadable images:")
        for name, reason in built.skipped:
            print(f"  {name}: {reason}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    from cacl.inference import query_extractor
    from cacl.inference.gallery import gallery_images
    from cacl.inference.image_bytes import ImageBytesError, decode_image
    from cacl.inference.index import GalleryIndexError
    from cacl.inference.live import LiveIndex, NewImage

    if args.chunk < 1:
        raise GalleryIndexError(f"--chunk must be at least 1, got {args.chunk}")
    folder = Path(args.images)
    paths = gallery_images(folder)
    added = known = 0
    skipped: list[tuple[Path, str]] = []
    with LiveIndex.open(args.index, writable=True, cam_regex=args.cam_regex) as live:
        extractor = query_extractor(live.index, args.checkpoint, args.device, args.batch_size)
        for start in range(0, len(paths), args.chunk):
            images, pixels = [], []
            for path in paths[start : start + args.chunk]:
                try:
                    data = path.read_bytes()
                    decoded = decode_image(data)
                except (OSError, ImageBytesError) as exc:
                    skipped.append((path, str(exc)))
                    continue
                images.append(NewImage(data, path.name, decoded.ext, args.camera))
                pixels.append(decoded.image)
            if not images:
                continue
            features = extractor(pixels, progress=False).numpy()
            done = live.add_images(images, features)
            added += sum(a.new for a in done)
            known += sum(not a.new for a in done)
            print(f"added {added} images so far ({len(live)} in the index)", flush=True)
        size = len(live)
    print(f"added {added} images to {args.index} ({known} already indexed); {size} in all")
    if skipped:
        print(f"skipped {len(skipped)} unreadable images:")
        for path, reason in skipped:
            print(f"  {path}: {reason}")
    return 0


def run_compact(args: argparse.Namespace) -> int:
    import time

    from cacl.inference.journal import JOURNAL
    from cacl.inference.live import LiveIndex
    from cacl.inference.snapshot import generation

    journal = Path(args.index) / JOURNAL
    before = journal.stat().st_size if journal.is_file() else 0
    start = time.perf_counter()
    with LiveIndex.open(args.index, writable=True) as live:
        opened = time.perf_counter() - start
        moved = live.compact()
        size = len(live)
    if not moved:
        print(f"{args.index}: nothing to compact ({size} images, all in the snapshot)")
        return 0
    print(
        f"{args.index}: {moved} added images folded into the snapshot (generation "
        f"{generation(Path(args.index))}, {size} images); journal {before:,} -> "
        f"{journal.stat().st_size:,} bytes; replaying it took {opened:.1f} s, compacting "
        f"{time.perf_counter() - start - opened:.1f} s"
    )
    return 0


def run_search(args: argparse.Namespace) -> int:
    from cacl.inference import query_extractor
    from cacl.inference.index import GalleryIndexError
    from cacl.inference.live import LiveIndex

    if args.top < 1:
        raise GalleryIndexError(f"--top must be at least 1, got {args.top}")
    live = LiveIndex.open(args.index)  # the snapshot and every image added since
    extractor = query_extractor(live.index, args.checkpoint, args.device, args.batch_size)
    features = extractor(args.queries, progress=False).numpy()
    results = []
    for query, feature in zip(args.queries, features):
        found = live.search(feature, args.top)
        rows = [
            {
                "rank": rank,
                "path": str(
                    live.file_of(hit.name) or Path(live.index.info.get("root", ".")) / hit.name
                ),
                "name": hit.name,
                "distance": hit.distance,
                "camera": hit.camera,
            }
            for rank, hit in enumerate(found, 1)
        ]
        results.append({"query": query, "results": rows})
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for block in results:
        print(f"query {block['query']}:")
        for hit in block["results"]:
            print(f"  {hit['rank']:3d}  {hit['distance']:.4f}  {hit['path']}")
    return 0
