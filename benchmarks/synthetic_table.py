"""The results table of the README: methods x seeds on a synthetic preset, mean and spread.

Runs, one after the other (each in its own process, so timings do not mix):
- the colour-histogram baseline (no training, no seed);
- ``one-branch``: the cluster-memory baseline, ``model.gray_branch=false``;
- ``cacl``: the shipped config as is;
- ``supervised``: true identities instead of pseudo labels (``train.supervised=true``).

Each run writes its own folder under ``--out``; finished runs (a ``results.json`` there) are
skipped, so the script can be stopped and started again. Prints a Markdown table.

    python benchmarks/synthetic_table.py --out runs/table --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS: dict[str, list[str]] = {
    "one-branch": ["model.gray_branch=false"],
    "cacl": [],
    "supervised": ["train.supervised=true"],
}


def run_training(out: Path, config: str, overrides: list[str]) -> dict:
    results = out / "results.json"
    if results.is_file():
        return json.loads(results.read_text())
    cmd = [sys.executable, "-m", "cacl", "train", "--no-progress", "--config", config]
    cmd += ["--output", str(out), *overrides]
    if (out / "last.pt").is_file():  # an interrupted run: continue it
        cmd = [sys.executable, "-m", "cacl", "train", "--no-progress", "--resume", str(out)]
    print("$", " ".join(cmd), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out.parent / f"{out.name}.log", "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
    return json.loads(results.read_text())


def colour_histogram(config: str) -> dict:
    from cacl.baselines import colorhist_features, evaluate_features
    from cacl.config import load_config
    from cacl.data.default import resolve_dataset

    dataset = resolve_dataset(**load_config(config).data.dataset_options())
    start = time.perf_counter()
    scores = evaluate_features(dataset, colorhist_features)
    scores["wall_seconds"] = time.perf_counter() - start
    return scores


def mean_spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("runs/table"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("overrides", nargs="*", help="SECTION.KEY=VALUE for every training run")
    args = parser.parse_args()

    rows: dict[str, list[dict]] = {"colour histogram": [colour_histogram(args.config)]}
    for seed in args.seeds:
        for method in args.methods:
            overrides = [*args.overrides, *METHODS[method], f"train.seed={seed}"]
            result = run_training(args.out / f"{method}-seed{seed}", args.config, overrides)
            rows.setdefault(method, []).append(result)

    print(
        f"\nconfig {args.config} {' '.join(args.overrides)}; seeds {args.seeds}; "
        f"{os.cpu_count()} CPUs; mean ± standard deviation over seeds\n"
    )
    print("| method | runs | mAP | rank-1 | rank-5 | initial mAP | wall time (min) |")
    print("|---|---|---|---|---|---|---|")
    for method, results in rows.items():
        initial = [r["initial_mAP"] for r in results if "initial_mAP" in r]
        print(
            f"| {method} | {len(results)} | {mean_spread([r['mAP'] for r in results])} | "
            f"{mean_spread([r['rank1'] for r in results])} | "
            f"{mean_spread([r['rank5'] for r in results])} | "
            f"{mean_spread(initial) if initial else '-'} | "
            f"{mean_spread([r['wall_seconds'] / 60 for r in results])} |"
        )


if __name__ == "__main__":
    main()
