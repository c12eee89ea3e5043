"""Gallery search at Market-1501 size: feature extraction, index build and query times.

By default the gallery is the ``bounding_box_test`` folder of the ``market`` synthetic preset
(16,372 images; generated into ``--root`` when missing, about 45 s) and the queries come from its
``query`` folder; the model is EfficientNet-Lite0 with the packaged ImageNet weights at 128 x 64
(the synthetic config's backbone and size), saved as a checkpoint and read back through
:class:`cacl.FeatureExtractor` as ``cacl index build`` does. ``--random`` skips the images and
indexes random unit features of the same size instead. For each index kind it prints the build
time, the query time per query (one query at a time, as ``cacl index search`` does, and in one
batch) and the recall of the exact top 10.

    nice python benchmarks/bench_index.py --root data/synth-market
    nice python benchmarks/bench_index.py --random
    nice python benchmarks/bench_index.py --cache /tmp/market.npz  # extract once, then reuse
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stages import load_average  # noqa: E402


def extracted_features(args: argparse.Namespace) -> tuple[np.ndarray, list[str], np.ndarray]:
    import torch

    from cacl.checkpoints.io import atomic_save
    from cacl.config import Config
    from cacl.data.images import list_images
    from cacl.data.synth import generate
    from cacl.inference import FeatureExtractor
    from cacl.models import CACLNet

    root = Path(args.root)
    if not (root / "bounding_box_test").is_dir():
        start = time.perf_counter()
        generate(root, preset="market", progress=False)
        print(f"generated the market preset in {root}: {time.perf_counter() - start:.1f} s")
    gallery = list_images(root / "bounding_box_test")
    queries = list_images(root / "query")[: args.queries]
    cfg = Config()
    cfg.data.height, cfg.data.width, cfg.model.backbone = 128, 64, "efficientnet_lite0"
    net = CACLNet("efficientnet_lite0", "imagenet", gray_branch=False, predictor=False)
    cfg.model.gray_branch = cfg.model.predictor = False
    with tempfile.TemporaryDirectory() as tmp:
        atomic_save({"config": cfg.to_dict(), "model": net.state_dict()}, Path(tmp) / "best.pt")
        extractor = FeatureExtractor(
            tmp, device="cpu", batch_size=args.batch_size, workers=args.workers
        )
    print(
        f"torch threads: {torch.get_num_threads()}, data workers: {args.workers}, "
        f"batch {args.batch_size}"
    )
    start = time.perf_counter()
    result = extractor.extract_files(gallery, progress=False)
    seconds = time.perf_counter() - start
    print(
        f"extract {len(result.paths)} gallery images: {seconds:.1f} s "
        f"({len(result.paths) / seconds:.0f} images/s), {len(result.failed)} unreadable"
    )
    qf = extractor.extract_files(queries, progress=False).features.numpy()
    return result.features.numpy(), [Path(p).name for p in result.paths], qf


def random_features(args: argparse.Namespace) -> tuple[np.ndarray, list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.gallery + args.queries, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    print(f"random unit features: {args.gallery} gallery, {args.queries} queries, D = {args.dim}")
    names = [f"{i:06d}.jpg" for i in range(args.gallery)]
    return x[: args.gallery], names, x[args.gallery :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="data/synth-market", help="market preset folder")
    parser.add_argument("--random", action="store_true", help="random features, no images")
    parser.add_argument("--gallery", type=int, default=16372, help="--random: gallery size")
    parser.add_argument("--dim", type=int, default=1280, help="--random: feature length")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--single", type=int, default=100, help="queries timed one at a time")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=0, help="image-reading processes")
    parser.add_argument(
        "--cache", default=None, help="an .npz file: reuse its features, or save them there"
    )
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from cacl.inference import GalleryIndex

    print(load_average())
    if args.cache and Path(args.cache).is_file():
        saved = np.load(args.cache)
        gallery, queries, names = saved["gallery"], saved["queries"], list(saved["names"])
        print(f"features from {args.cache}")
    else:
        gallery, names, queries = (random_features if args.random else extracted_features)(args)
        if args.cache:
            np.savez(args.cache, gallery=gallery, queries=queries, names=np.array(names))
    print(f"gallery {gallery.shape[0]} x {gallery.shape[1]}, {len(queries)} queries, k {args.k}")
    truth = None
    for kind in ("flat", "ivf", "hnsw"):
        start = time.perf_counter()
        index = GalleryIndex.build(gallery, names, kind=kind)
        build = time.perf_counter() - start
        start = time.perf_counter()
        for q in queries[: args.single]:
            index.search(q, args.k)
        single = (time.perf_counter() - start) / min(args.single, len(queries))
        start = time.perf_counter()
        _, found = index.search(queries, args.k)
        batched = (time.perf_counter() - start) / len(queries)
        truth = found if truth is None else truth
        hits = np.mean([len(set(a) & set(b)) / args.k for a, b in zip(found, truth)])
        params = ", ".join(f"{k} {v}" for k, v in index.params.items()) or "exact"
        print(
            f"{kind:5s} ({params}): build {build:6.2f} s, query {single * 1e3:7.2f} ms one at a "
            f"time, {batched * 1e3:6.3f} ms in a batch, recall@{args.k} {hits:.3f}"
        )
    print(load_average())


if __name__ == "__main__":
    main()
