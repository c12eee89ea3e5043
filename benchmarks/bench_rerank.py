"""Seconds and peak memory of the k-reciprocal re-ranking at Market-1501 test size.

Synthetic clustered features (D = 2048) split into 3,368 queries and 15,913 gallery images.
``re_ranking_features`` works from the features; ``re_ranking`` from the three distance matrices
(the standard signature; building them is timed apart, as the caller's cost). Each runs in a fresh
process, so each peak is its own; the two outputs are compared.

    python benchmarks/bench_rerank.py
    python benchmarks/bench_rerank.py --query 1000 --gallery 5000 --skip-dense
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _stages import StageMeter, emit, load_average, run_worker  # noqa: E402
from bench_pseudo_labels import synthetic_memory  # noqa: E402


def make_split(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    features, _, _ = synthetic_memory(
        args.query + args.gallery, args.dim, noise=1.0, seed=args.seed
    )
    return features[: args.query], features[args.query :]


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from cacl.evaluation.rerank import re_ranking, re_ranking_features

    meter = StageMeter()
    with meter.stage("features"):
        query, gallery = make_split(args)
    if args.mode == "features":
        with meter.stage("re_ranking_features"):
            out = re_ranking_features(query, gallery, args.k1, args.k2, args.lambda_value)
    else:
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--query", type=int, default=3368)
    parser.add_argument("--gallery", type=int, default=15913)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k1", type=int, default=20)
    parser.add_argument("--k2", type=int, default=6)
    parser.add_argument("--lambda-value", type=float, default=0.3)
    parser.add_argument("--skip-dense", action="store_true", help="only re_ranking_features")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="features", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        emit(worker(args))
        return

    print(
        f"re-ranking benchmark: {args.query:,} queries x {args.gallery:,} gallery, "
        f"D = {args.dim}, k1 = {args.k1}, k2 = {args.k2}, lambda = {args.lambda_value}; "
        f"{load_average()} at start"
    )
    common = ["--query", str(args.query), "--gallery", str(args.gallery), "--dim", str(args.dim)]
    common += ["--k1", str(args.k1), "--k2", str(args.k2), "--seed", str(args.seed)]
    common += ["--lambda-value", str(args.lambda_value)]
    outputs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("features",) if args.skip_dense else ("features", "dense"):
            path = str(Path(tmp) / f"{mode}.npy")
            result = run_worker(__file__, ["--mode", mode, "--output", path, *common])
            print(f"\n{mode} ({load_average()})")
            if "error" in result:
                print(f"  FAILED (return code {result['returncode']}):\n{result['error']}")
                continue
            for name, stage in result["stages"].items():
                print(
                    f"  {name:<20} {stage['seconds']:8.2f} s wall {stage['cpu_seconds']:8.2f} s "
                    f"CPU   peak RSS {stage['peak_gb']:5.2f} GB"
                )
            outputs[mode] = np.load(path)
        if len(outputs) == 2:
            diff = np.abs(outputs["features"] - outputs["dense"]).max()
            print(f"\nmax |re_ranking_features - re_ranking| = {diff:.2e}")


if __name__ == "__main__":
    main()
