"""Seconds and peak memory of the pseudo labels (kNN, Jaccard, DBSCAN x2, refinement) at scale.

Synthetic features like a memory bank: identities of about 20 images in a low-dimensional
subspace, a random offset per camera, and noise strong enough that DBSCAN leaves outliers;
D = 2048, L2-normalised. Every size runs in a fresh process, so the peaks are its own. The floor
is the exact kNN alone (faiss ``IndexFlatIP``, and the blocked torch search the pipeline uses),
also in fresh processes.

    python benchmarks/bench_pseudo_labels.py                          # 16,000 and 32,621
    python benchmarks/bench_pseudo_labels.py --sizes 100000 --no-floor
    python benchmarks/bench_pseudo_labels.py --sizes 4000 --backend faiss
    python benchmarks/bench_pseudo_labels.py --sizes 32621 --cameras 15 --distance ca_jaccard
    python benchmarks/bench_pseudo_labels.py --sizes 100000 300000 --knn exact approximate \
        --noise 0.8 --no-floor --out benchmarks/results/bench_pseudo_labels_scale.jsonl

With ``--knn exact approximate`` every size runs both searches (fresh processes) and prints the ARI
between their labels, the recall of the approximate neighbour lists (measured on 1,000 sampled
rows against an exact search) and, over several sizes, the fitted growth exponent ``a`` of the
pipeline's seconds (time ~ N^a).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stages import StageMeter, emit, load_average, print_stage, run_worker  # noqa: E402


def synthetic_memory(
    n: int,
    dim: int = 2048,
    cluster_size: int = 20,
    subspace: int = 64,
    cameras: int = 6,
    noise: float = 1.1,
    camera_scale: float = 0.3,
    ambient_noise: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, identity, camera)``: float32 ``(n, dim)`` unit rows, identity and camera."""
    rng = np.random.default_rng(seed)
    n_ids = max(1, round(n / cluster_size))
    ids = rng.integers(0, n_ids, n)
    cams = rng.integers(0, cameras, n)
    basis = np.linalg.qr(rng.standard_normal((dim, subspace)))[0].T.astype(np.float32)
    centers = rng.standard_normal((n_ids, subspace)).astype(np.float32)
    offsets = (camera_scale * rng.standard_normal((cameras, subspace))).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    ambient = ambient_noise * np.sqrt(subspace / dim)
    for a in range(0, n, 4096):
        b = min(a + 4096, n)
        low = centers[ids[a:b]] + offsets[cams[a:b]]
        low += noise * rng.standard_normal((b - a, subspace), dtype=np.float32)
        out[a:b] = low @ basis
        out[a:b] += ambient * rng.standard_normal((b - a, dim), dtype=np.float32)
        # normalised chunk by chunk: a whole-matrix norm would square a copy (8 GB at 10^6)
        out[a:b] /= np.linalg.norm(out[a:b], axis=1, keepdims=True)
    return out, ids, cams


def pipeline_worker(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    from cacl.clustering.approximate import ApproximateOptions, sample_recall
    from cacl.clustering.camera import ca_encoding, camera_centered, camera_neighbors
    from cacl.clustering.dbscan import dbscan_sparse
    from cacl.clustering.jaccard import encoding_from_neighbors, jaccard_from_encoding
    from cacl.clustering.knn import knn_prepared, prepare_features
    from cacl.clustering.refine import refine_from_encoding
    from cacl.clustering.stats import training_classes

    meter = StageMeter()
    with meter.stage("features"):
        features, ids, cams = synthetic_memory(
            args.n, args.dim, cameras=args.cameras, noise=args.noise, seed=args.seed
        )
    x = prepare_features(features, normalize=True).to(args.device)
    if args.camera_norm == "center":
        with meter.stage("camera_norm"):
            x = camera_centered(x, cams, in_place=True)
    approximate = args.knn[0] == "approximate"  # a worker runs one search
    options = ApproximateOptions(
        dim=args.knn_dim, candidates=args.candidates, ef_search=args.ef_search
    )
    # The stages of cacl.clustering.pseudo_labels_with_stats, one by one.
    with meter.stage("knn"):
        if args.distance == "ca_jaccard":
            lists = camera_neighbors(
                x,
                cams,
                args.k1_intra + 1,
                args.k1_inter + 1,
                approximate=approximate,
                options=options,
                progress=args.progress,
            )
        else:
            neighbors = knn_prepared(
                x,
                args.k1,
                metric="cosine",
                backend=args.backend,
                approximate=approximate,
                options=options,
                progress=args.progress,
            )
    recall = None
    if approximate:  # measured outside the timed stages
        if args.distance == "ca_jaccard":
            recall = {
                "intra": sample_recall(x, lists.intra, groups=cams, within=True),
                "inter": sample_recall(x, lists.inter, groups=cams),
            }
        else:
            recall = sample_recall(x, neighbors.indices)
    with meter.stage("jaccard"):
        if args.distance == "ca_jaccard":
            v = ca_encoding(lists, args.k1_intra, args.k1_inter, args.k2_intra, args.k2_inter)
            del lists
        else:
            v = encoding_from_neighbors(x, neighbors, args.k1, args.k2)
            del neighbors
        graph = jaccard_from_encoding(v, max_distance=args.eps)
    with meter.stage("dbscan"):
        raw = dbscan_sparse(graph, args.eps, 4)
    with meter.stage("dbscan_tight"):
        tight = dbscan_sparse(graph, args.eps - 0.02, 4)
    with meter.stage("refine"):
        labels = refine_from_encoding(v, raw, tight)
    kept = labels >= 0
    if args.labels_out:
        np.save(args.labels_out, labels)
    gpu_peak = None
    if str(args.device).startswith("cuda"):
        import torch

        gpu_peak = torch.cuda.max_memory_allocated() / 1024**3
    return {
        "n": args.n,
        "gpu_peak_gb": gpu_peak,
        "stages": meter.stages,
        "peak_method": meter.method,
        "nnz_per_row": graph.nnz / args.n,
        "clusters_raw": int(raw.max()) + 1,
        "outliers_raw": int((raw < 0).sum()),
        "clusters": int(labels.max()) + 1,
        "outliers": int((~kept).sum()),
        "true_ids": int(ids.max()) + 1,
        "ari_clustered": float(adjusted_rand_score(ids[kept], labels[kept])) if kept.any() else 0,
        "ari": float(adjusted_rand_score(ids, training_classes(labels, "singleton"))),
        "recall": recall,
    }


def floor_worker(args: argparse.Namespace) -> dict[str, Any]:
    from cacl.clustering.knn import knn_prepared, prepare_features

    meter = StageMeter()
    with meter.stage("features"):
        features, _, _ = synthetic_memory(
            args.n, args.dim, cameras=args.cameras, noise=args.noise, seed=args.seed
        )
        x = prepare_features(features, normalize=True).to(args.device)
    with meter.stage(f"knn_{args.backend}"):
        knn_prepared(x, args.k1, metric="cosine", backend=args.backend)
    return {"n": args.n, "stages": meter.stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16000, 32621])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--noise", type=float, default=1.1, help="within-identity noise")
    parser.add_argument("--k1", type=int, default=30)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--eps", type=float, default=0.6)
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "faiss"])
    parser.add_argument("--distance", default="jaccard", choices=["jaccard", "ca_jaccard"])
    parser.add_argument("--camera-norm", default="none", choices=["none", "center"])
    parser.add_argument("--cameras", type=int, default=6, help="cameras of the synthetic set")
    parser.add_argument("--k1-intra", type=int, default=5)
    parser.add_argument("--k1-inter", type=int, default=20)
    parser.add_argument("--k2-intra", type=int, default=3)
    parser.add_argument("--k2-inter", type=int, default=3)
    parser.add_argument("--no-floor", action="store_true", help="skip the kNN-alone runs")
    parser.add_argument(
        "--knn",
        nargs="+",
        default=["exact"],
        choices=["exact", "approximate"],
        help="neighbour searches to run at every size (both: ARI between their labels)",
    )
    parser.add_argument("--knn-dim", type=int, default=64, help="approximate: projection dims")
    parser.add_argument(
        "--candidates", type=float, default=1.5, help="approximate: candidates per row, x k"
    )
    parser.add_argument("--ef-search", type=int, default=96, help="approximate: HNSW efSearch")
    parser.add_argument("--out", type=Path, help="append one JSON line per run to this file")
    parser.add_argument("--progress", action="store_true", help="progress bars in the workers")
    parser.add_argument("--labels-out", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="where the kNN runs (cpu, cuda)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        emit(floor_worker(args) if args.floor else pipeline_worker(args))
        return

    common = ["--dim", str(args.dim), "--noise", str(args.noise), "--seed", str(args.seed)]
    common += ["--k1", str(args.k1), "--k2", str(args.k2), "--eps", str(args.eps)]
    common += ["--cameras", str(args.cameras), "--distance", args.distance]
    common += ["--camera-norm", args.camera_norm, "--device", args.device]
    common += ["--k1-intra", str(args.k1_intra), "--k1-inter", str(args.k1_inter)]
    common += ["--k2-intra", str(args.k2_intra), "--k2-inter", str(args.k2_inter)]
    common += ["--knn-dim", str(args.knn_dim)] + (["--progress"] if args.progress else [])
    common += ["--candidates", str(args.candidates), "--ef-search", str(args.ef_search)]
    ca = (
        f" (k1 intra/inter {args.k1_intra}/{args.k1_inter}, k2 {args.k2_intra}/{args.k2_inter})"
        if args.distance == "ca_jaccard"
        else ""
    )
    print(
        f"pseudo labels benchmark, D = {args.dim}, {args.cameras} cameras, distance "
        f"{args.distance}{ca}, camera_norm {args.camera_norm}, k1 = {args.k1}, k2 = {args.k2}, "
        f"eps = {args.eps}, device {args.device}; {load_average()} at start"
    )
    totals: dict[str, list[tuple[int, float]]] = {}
    for n in args.sizes:
        labels: dict[str, np.ndarray] = {}
        for knn in args.knn:
            with tempfile.TemporaryDirectory() as tmp:
                path = str(Path(tmp) / "labels.npy")
                result = run_worker(
                    __file__,
                    [
                        "--n",
                        str(n),
                        "--backend",
                        args.backend,
                        "--knn",
                        knn,
                        "--labels-out",
                        path,
                        *common,
                    ],
                )
                if "error" not in result:
                    labels[knn] = np.load(path)
            print(f"\nN = {n:,}, {knn} kNN  ({load_average()})")
            if "error" in result:
                print(f"  FAILED (return code {result['returncode']}):\n{result['error']}")
                continue
            total = report_run(result)
            totals.setdefault(knn, []).append((n, total["seconds"]))
            if args.out:
                record = {
                    "n": n,
                    "knn": knn,
                    "distance": args.distance,
                    "dim": args.dim,
                    "noise": args.noise,
                    "cameras": args.cameras,
                    "knn_dim": args.knn_dim,
                    "candidates": args.candidates,
                    "ef_search": args.ef_search,
                    "load_average": load_average(),
                    **result,
                    "pipeline": total,
                }
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
        if len(labels) == 2:
            from sklearn.metrics import adjusted_rand_score

            from cacl.clustering.stats import training_classes

            # as training sees them: every un-clustered row its own class (as the ARI against
            # the identities); -1 as one class would count two outlier sets as one cluster
            exact, approx = (training_classes(labels[k], "singleton") for k in labels)
            agree = adjusted_rand_score(exact, approx)
            status = float(((labels["exact"] < 0) != (labels["approximate"] < 0)).mean())
            print(
                f"\n  N = {n:,}: ARI between the exact and the approximate labels {agree:.4f} "
                f"(un-clustered rows as singletons); clustered in one and not the other: "
                f"{status:.2%} of the rows"
            )
            if args.out:
                record = {
                    "n": n,
                    "distance": args.distance,
                    "ari_exact_vs_approximate": agree,
                    "outlier_status_differs": status,
                }
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(record) + "\n")
        if args.no_floor:
            continue
        for backend in ("faiss", "torch"):
            floor = run_worker(__file__, ["--floor", "--n", str(n), "--backend", backend, *common])
            if "error" in floor:
                print(f"  exact kNN alone, {backend}: FAILED\n{floor['error']}")
                continue
            stage = floor["stages"][f"knn_{backend}"]
            print_stage(f"kNN alone ({backend})", stage)
    for knn, points in totals.items():
        if len(points) >= 2:
            a = np.polyfit(np.log([p[0] for p in points]), np.log([p[1] for p in points]), 1)[0]
            print(
                f"\n{knn} kNN: pipeline seconds grow as N^{a:.2f} over N = "
                f"{', '.join(f'{p[0]:,}' for p in points)}"
            )


def report_run(result: dict[str, Any]) -> dict[str, float]:
    """Print a run's stages and what its labels look like; return the pipeline's totals."""
    stages = {k: v for k, v in result["stages"].items() if k != "features"}
    print_stage("features", result["stages"]["features"])
    for name, stage in stages.items():
        print_stage(name, stage)
    total = {key: sum(s[key] for s in stages.values()) for key in ("seconds", "cpu_seconds")}
    total["peak_gb"] = max(s["peak_gb"] for s in stages.values())
    print_stage("pipeline", total)
    print(f"  (peak RSS per stage from {result['peak_method']}; CPU = user + system seconds)")
    if result.get("gpu_peak_gb") is not None:
        print(f"  peak GPU memory allocated {result['gpu_peak_gb']:.2f} GB")
    recall = result.get("recall")
    if isinstance(recall, dict):
        print(
            f"  recall of the lists on 1,000 sampled rows: intra-camera {recall['intra']:.4f}, "
            f"inter-camera {recall['inter']:.4f}"
        )
    elif recall is not None:
        print(f"  recall of the neighbour lists on 1,000 sampled rows: {recall:.4f}")
    print(
        f"  Jaccard entries <= eps per row {result['nnz_per_row']:.1f}; "
        f"{result['clusters_raw']} clusters / {result['outliers_raw']} outliers before "
        f"refinement, {result['clusters']} / {result['outliers']} after "
        f"({result['true_ids']} true identities; ARI against them {result['ari']:.3f}, "
        f"on the clustered rows {result['ari_clustered']:.3f})"
    )
    return total


if __name__ == "__main__":
    main()
