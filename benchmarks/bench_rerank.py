"""Seconds and peak memory of the k-reciprocal re-ranking and of the evaluation, at test-split size.

Synthetic clustered features (D = 2048, unit rows, ``synthetic_memory`` of
``bench_pseudo_labels.py``) with identities and cameras, split into queries and gallery images
that share the identities. Presets: ``market1501`` (3,368 queries x 15,913 gallery images, 751
identities, 6 cameras) and ``msmt17`` (11,659 x 82,161, 3,060 identities, 15 cameras).

One fresh worker process runs, one after the other:

- ``knn (floor)``: the exact kNN (torch engine, ``k1 + 1`` neighbours) of all ``q + g``
  features, the least any re-ranking of them has to do; the re-ranking time is reported as a
  ratio to it, measured in the same run;
- ``re_ranking_features`` (what ``cacl eval --rerank`` calls, here as there on the queries' and
  the gallery's rows of one feature tensor), then ``evaluate (re-ranked)``: mAP, CMC and mINP
  of its ``q x g`` answer (queries in chunks of bounded memory);
- ``distance (plain)`` (``cacl eval``'s squared Euclidean distances), ``evaluate (plain)``.

Each stage has its wall and CPU seconds and the process's peak resident memory during it. With
``market1501``, a second worker also runs ``re_ranking`` from the three dense distance matrices
(the standard signature; building them is timed apart) and the two answers are compared; at
``msmt17`` size the gallery-gallery matrix alone would take 27 GB, so that part is left out.

    python benchmarks/bench_rerank.py                                  # market1501
    python benchmarks/bench_rerank.py --preset msmt17 --out benchmarks/results/bench_rerank.jsonl
    python benchmarks/bench_rerank.py --preset msmt17 --scale 0.05     # a quick check
    python benchmarks/bench_rerank.py --query 1000 --gallery 5000 --skip-dense
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stages import StageMeter, emit, load_average, run_worker  # noqa: E402
from bench_pseudo_labels import synthetic_memory  # noqa: E402

#: ``(queries, gallery images, identities, cameras)`` of the test splits.
PRESETS = {
    "market1501": (3368, 15913, 751, 6),
    "msmt17": (11659, 82161, 3060, 15),
}


def make_split(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(features, identities, cameras)`` of ``args.query + args.gallery`` rows: the first
    ``args.query`` are the queries (identities are drawn at random, so both splits share them)."""
    n = args.query + args.gallery
    return synthetic_memory(
        n,
        args.dim,
        cluster_size=n / args.identities,
        cameras=args.cameras,
        noise=args.noise,
        seed=args.seed,
    )


def scores(result: Any) -> dict[str, float]:
    """The numbers ``cacl eval`` prints, from a :class:`RetrievalResult`."""
    return {
        "mAP": result.mAP,
        "rank1": result.rank(1),
        "rank5": result.rank(5),
        "rank10": result.rank(10),
        "mINP": result.mINP,
        "valid_queries": result.num_valid_queries,
    }


def features_worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from cacl.clustering.knn import knn_prepared, prepare_features
    from cacl.evaluation import evaluate
    from cacl.evaluation.network import squared_euclidean
    from cacl.evaluation.rerank import re_ranking_features

    meter = StageMeter()
    with meter.stage("features"):
        features, ids, cams = make_split(args)
    q = args.query
    # consecutive rows of one tensor, as ``cacl eval`` extracts them: used without a copy
    query, gallery = torch.from_numpy(features).split([q, args.gallery])
    labels = (ids[:q], ids[q:], cams[:q], cams[q:])
    with meter.stage("knn (floor)"):
        x = prepare_features(features, normalize=False)  # float32 numpy: no copy
        knn_prepared(x, args.k1 + 1, metric="sqeuclidean", backend="torch")
    del x
    with meter.stage("re_ranking_features"):
        out = re_ranking_features(query, gallery, args.k1, args.k2, args.lambda_value)
    with meter.stage("evaluate (re-ranked)"):
        reranked = scores(evaluate(out, *labels, max_rank=50))
    if args.output:
        np.save(args.output, out)
    del out
    with meter.stage("distance (plain)"):
        plain = squared_euclidean(query, gallery)
    with meter.stage("evaluate (plain)"):
        plain_scores = scores(evaluate(plain, *labels, max_rank=50))
    return {
        "stages": meter.stages,
        "peak_method": meter.method,
        "metrics": {"re-ranked": reranked, "plain": plain_scores},
        "torch_threads": torch.get_num_threads(),
    }


def dense_worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from cacl.evaluation.rerank import re_ranking

    meter = StageMeter()
    with meter.stage("features"):
        features = make_split(args)[0]
        query, gallery = features[: args.query], features[args.query :]
    with meter.stage("distance matrices"):
        q, g = torch.from_numpy(query), torch.from_numpy(gallery)

        def sqdist(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
            d = (a * a).sum(1, keepdim=True) + (b * b).sum(1)[None, :]
            return d.addmm_(a, b.T, alpha=-2.0).numpy()

        qg, qq, gg = sqdist(q, g), sqdist(q, q), sqdist(g, g)
    with meter.stage("re_ranking"):
        out = re_ranking(qg, qq, gg, args.k1, args.k2, args.lambda_value)
    np.save(args.output, out)
    return {"stages": meter.stages, "peak_method": meter.method}


def print_stages(result: dict[str, Any]) -> None:
    for name, stage in result["stages"].items():
        print(
            f"  {name:<22} {stage['seconds']:8.2f} s wall {stage['cpu_seconds']:8.2f} s CPU   "
            f"peak RSS {stage['peak_gb']:5.2f} GB"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="market1501")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies the preset's sizes")
    parser.add_argument("--query", type=int, help="queries (default: the preset's, scaled)")
    parser.add_argument("--gallery", type=int, help="gallery images (default: the preset's)")
    parser.add_argument("--identities", type=int, help="default: the preset's, scaled")
    parser.add_argument("--cameras", type=int, help="default: the preset's")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--noise", type=float, default=1.0, help="see synthetic_memory")
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lambda-value", type=float, default=0.3)
    parser.add_argument("--skip-dense", action="store_true", help="no dense re_ranking worker")
    parser.add_argument("--out", type=Path, help="append one JSON line with the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="features", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(features_worker(args) if args.mode == "features" else dense_worker(args))
        return

    n_query, n_gallery, n_ids, n_cams = PRESETS[args.preset]
    args.query = args.query or max(1, round(args.scale * n_query))
    args.gallery = args.gallery or max(1, round(args.scale * n_gallery))
    args.identities = args.identities or max(1, round(args.scale * n_ids))
    args.cameras = args.cameras or n_cams
    dense = not args.skip_dense and args.preset != "msmt17"
    print(
        f"re-ranking benchmark ({args.preset}, scale {args.scale}): {args.query:,} queries x "
        f"{args.gallery:,} gallery, {args.identities:,} identities, {args.cameras} cameras, "
        f"D = {args.dim}, k1 = {args.k1}, k2 = {args.k2}, lambda = {args.lambda_value}; "
        f"{load_average()} at start"
    )
    common = ["--query", str(args.query), "--gallery", str(args.gallery), "--dim", str(args.dim)]
    common += ["--identities", str(args.identities), "--cameras", str(args.cameras)]
    common += ["--k1", str(args.k1), "--k2", str(args.k2), "--seed", str(args.seed)]
    common += ["--lambda-value", str(args.lambda_value), "--noise", str(args.noise)]
    record: dict[str, Any] = {
        "benchmark": "bench_rerank",
        **{k: v for k, v in vars(args).items() if k not in ("worker", "mode", "output", "out")},
        "cpus": os.cpu_count(),
        "load_average_start": load_average(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        paths = {mode: str(Path(tmp) / f"{mode}.npy") for mode in ("features", "dense")}
        # the answer is saved for the comparison only: 3.8 GB at msmt17 size
        output = ["--output", paths["features"]] if dense else []
        result = run_worker(__file__, ["--mode", "features", *output, *common])
        print(f"\nre_ranking_features and evaluation ({load_average()})")
        if "error" in result:
            print(f"  FAILED (return code {result['returncode']}):\n{result['error']}")
            record["error"] = result["error"]
        else:
            print_stages(result)
            stages = result["stages"]
            floor, rerank = stages["knn (floor)"], stages["re_ranking_features"]
            ratio = rerank["seconds"] / floor["seconds"]
            cpu_ratio = rerank["cpu_seconds"] / max(floor["cpu_seconds"], 1e-9)
            print(
                f"  re-ranking / exact kNN of the {args.query + args.gallery:,} features: "
                f"{ratio:.2f}x wall, {cpu_ratio:.2f}x CPU"
            )
            peak = max(s["peak_gb"] for s in stages.values())
            print(f"  peak RSS over all stages {peak:.2f} GB")
            for name, m in result["metrics"].items():
                print(
                    f"  {name:<10} mAP {m['mAP']:.4f}  rank-1 {m['rank1']:.4f}  rank-5 "
                    f"{m['rank5']:.4f}  rank-10 {m['rank10']:.4f}  mINP {m['mINP']:.4f}  "
                    f"({m['valid_queries']:,} valid queries)"
                )
            record.update(result, ratio_wall=ratio, ratio_cpu=cpu_ratio, peak_gb=peak)
        if dense and "error" not in result:
            dense_result = run_worker(
                __file__, ["--mode", "dense", "--output", paths["dense"], *common]
            )
            print(f"\nre_ranking from dense matrices ({load_average()})")
            if "error" in dense_result:
                print(f"  FAILED (return code {dense_result['returncode']}):")
                print(dense_result["error"])
            else:
                print_stages(dense_result)
                diff = float(np.abs(np.load(paths["features"]) - np.load(paths["dense"])).max())
                print(f"\nmax |re_ranking_features - re_ranking| = {diff:.2e}")
                record.update(dense_stages=dense_result["stages"], max_abs_diff_dense=diff)
    record["load_average_end"] = load_average()
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        print(f"\nappended to {args.out}")


if __name__ == "__main__":
    main()
