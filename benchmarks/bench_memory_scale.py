"""Seconds and peak memory of a training memory bank at scale: build, centroids, proxies,
updates, losses and the relabel statistics, for N up to 10^6 rows.

No image is trained at that size on a CPU: the bank is built directly, random unit rows of D
written chunk by chunk into storage allocated once (``InstanceMemory.empty`` + ``write_rows``, as
the memory initialisation writes extracted features into the bank). Random cluster labels of about
``--cluster-size`` rows each with ``--outliers`` of the rows un-clustered (-1), and random
cameras: ``--camera-spread row`` gives every row any of ``--cameras`` cameras (the worst case for
the camera proxies: about 11.5 (class, camera) pairs per class of 20 at 15 cameras), ``class``
gives each class ``--cameras-per-class`` cameras of its own. Stages, each timed with its peak
resident memory (the bank included), every size in a fresh process:

- ``build``: allocate the bank and write N normalised rows;
- ``set_cameras``; ``cluster_stats``: ``ClusterStats.of`` with the cameras and the bank's rows
  (camera spread, own-camera share of 10-NN on 4,096 rows); ``training_classes``: the clusters
  as training classes (``cluster.outliers``: singleton by default, one class per outlier);
- ``set_labels``: the centroids and the camera proxies of those classes, O(N * D);
- ``update``: ``--updates`` memory updates of a batch of ``--batch`` rows;
- ``losses``: the intra-view cluster loss and the camera proxy loss, forward and backward.

    python benchmarks/bench_memory_scale.py                                  # 10^6, float16
    python benchmarks/bench_memory_scale.py --sizes 100000 1000000 --dtype float32
    python benchmarks/bench_memory_scale.py --sizes 20000 100000 --camera-spread class
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stages import GB, StageMeter, emit, load_average, print_stage, run_worker  # noqa: E402

#: Rows generated per random chunk (a float32 chunk of 8,192 x 2,048 is 64 MB).
CHUNK_ROWS = 8192


def random_labels(args: argparse.Namespace, generator) -> tuple[Any, Any]:
    """``(cluster labels with -1, cameras)`` as int64 numpy arrays."""
    import numpy as np
    import torch

    n = args.n
    clusters = max(1, round(n * (1 - args.outliers) / args.cluster_size))
    labels = torch.randint(0, clusters, (n,), generator=generator)
    labels[torch.rand(n, generator=generator) < args.outliers] = -1
    if args.camera_spread == "row":
        cams = torch.randint(0, args.cameras, (n,), generator=generator)
    else:  # each cluster sees cameras_per_class cameras of its own, each row one of them
        own = torch.randint(
            0, args.cameras, (clusters, args.cameras_per_class), generator=generator
        )
        pick = torch.randint(0, args.cameras_per_class, (n,), generator=generator)
        cams = own[labels.clamp_min(0), pick]
        outlier = labels < 0
        cams[outlier] = torch.randint(0, args.cameras, (int(outlier.sum()),), generator=generator)
    return labels.numpy().astype(np.int64), cams.numpy().astype(np.int64)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from cacl.clustering.stats import ClusterStats, training_classes
    from cacl.losses import camera_proxy_loss, intra_view_cluster_loss
    from cacl.memory import InstanceMemory, memory_dtype

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    n, dim = args.n, args.dim
    meter = StageMeter()
    with meter.stage("build"):
        memory = InstanceMemory.empty(n, dim, dtype=memory_dtype(args.dtype))
        for a in range(0, n, CHUNK_ROWS):
            memory.write_rows(a, torch.randn(min(CHUNK_ROWS, n - a), dim, generator=g))
    raw, cams = random_labels(args, g)
    with meter.stage("set_cameras"):
        memory.set_cameras(torch.from_numpy(cams))
    with meter.stage("cluster_stats"):
        stats = ClusterStats.of(raw, cameras=cams, features=memory.features)
    with meter.stage("training_classes"):
        classes = training_classes(raw, args.outliers_as)
    with meter.stage("set_labels"):
        memory.set_labels(torch.from_numpy(classes))
    assert memory.centroids is not None and memory.proxies is not None
    with meter.stage("update"):
        for _ in range(args.updates):
            index = torch.randint(0, n, (args.batch,), generator=g)
            memory.update(index, F.normalize(torch.randn(args.batch, dim, generator=g), dim=1))
    labelled = torch.from_numpy(classes)
    rows = torch.nonzero(labelled >= 0).flatten()
    with meter.stage("losses"):
        for _ in range(args.loss_steps):
            index = rows[torch.randint(0, rows.numel(), (args.batch,), generator=g)]
            x = F.normalize(torch.randn(args.batch, dim, generator=g), dim=1).requires_grad_()
            targets = labelled[index]
            loss = intra_view_cluster_loss(x, memory.centroids, targets)
            loss = loss + camera_proxy_loss(
                x,
                memory.proxies,
                memory.proxy_class,
                memory.proxy_camera,
                targets,
                memory.cameras[index],
            )
            loss.backward()
    return {
        "n": n,
        "stages": meter.stages,
        "peak_method": meter.method,
        "bank_gb": memory.features.numel() * memory.features.element_size() / GB,
        "centroids_gb": memory.centroids.numel() * 4 / GB,
        "proxies_gb": memory.proxies.numel() * 4 / GB,
        "classes": int(memory.centroids.shape[0]),
        "proxies": int(memory.proxies.shape[0]),
        "clusters": stats.n_clusters,
        "outliers": stats.n_outliers,
        "own_camera_share": stats.own_camera_share,
        "own_camera_chance": stats.own_camera_chance,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--dtype", default="float16", choices=["float32", "float16"])
    parser.add_argument("--cluster-size", type=float, default=20.0, help="rows per cluster")
    parser.add_argument("--outliers", type=float, default=0.15, help="share of rows with -1")
    parser.add_argument(
        "--outliers-as", default="singleton", choices=["singleton", "drop"], help="cluster.outliers"
    )
    parser.add_argument("--cameras", type=int, default=15)
    parser.add_argument("--camera-spread", default="row", choices=["row", "class"])
    parser.add_argument("--cameras-per-class", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--loss-steps", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(worker(args))
        return

    common = ["--dim", str(args.dim), "--dtype", args.dtype, "--seed", str(args.seed)]
    common += ["--cluster-size", str(args.cluster_size), "--outliers", str(args.outliers)]
    common += ["--outliers-as", args.outliers_as, "--cameras", str(args.cameras)]
    common += ["--camera-spread", args.camera_spread]
    common += ["--cameras-per-class", str(args.cameras_per_class), "--batch", str(args.batch)]
    common += ["--updates", str(args.updates), "--loss-steps", str(args.loss_steps)]
    spread = (
        "any camera per row"
        if args.camera_spread == "row"
        else f"{args.cameras_per_class} cameras per cluster"
    )
    print(
        f"memory bank benchmark: D = {args.dim}, {args.dtype} rows, clusters of ~"
        f"{args.cluster_size:g} rows, {100 * args.outliers:g}% outliers as {args.outliers_as}, "
        f"{args.cameras} cameras ({spread}), batch {args.batch}; {load_average()} at start"
    )
    for n in args.sizes:
        result = run_worker(__file__, ["--n", str(n), *common])
        print(f"\nN = {n:,}  ({load_average()})")
        if "error" in result:
            print(f"  FAILED (return code {result['returncode']}):\n{result['error']}")
            continue
        stages = result["stages"]
        for name, stage in stages.items():
            print_stage(name, stage)
        each = stages["update"]["seconds"] / max(args.updates, 1)
        relabel = ("cluster_stats", "training_classes", "set_labels")
        print_stage(
            "relabel + centroids",
            {
                "seconds": sum(stages[k]["seconds"] for k in relabel),
                "cpu_seconds": sum(stages[k]["cpu_seconds"] for k in relabel),
                "peak_gb": max(stages[k]["peak_gb"] for k in relabel),
            },
        )
        print(
            f"  bank {result['bank_gb']:.2f} GB; {result['classes']:,} classes "
            f"(centroids {result['centroids_gb']:.2f} GB), {result['proxies']:,} camera proxies "
            f"({result['proxies_gb']:.2f} GB); {result['clusters']:,} clusters, "
            f"{result['outliers']:,} outliers; own-camera share {result['own_camera_share']:.3f} "
            f"(chance {result['own_camera_chance']:.3f}); {1000 * each:.1f} ms per update; "
            f"peak of all stages {max(s['peak_gb'] for s in stages.values()):.2f} GB "
            f"({result['peak_method']}, {result['threads']} threads)"
        )


if __name__ == "__main__":
    main()
