"""The camera-aware ablation of the README: clustering options x seeds on a synthetic preset.

Each run is a `cacl train` in its own process (timings do not mix), one after the other, written
under ``--out``; finished runs are skipped and interrupted ones resumed, so the script can be
stopped and started again. One JSON line per finished run is appended to ``--results`` (kept in
git: a later session continues the table instead of re-running it); ``--table`` prints the table
from that file alone.

    python benchmarks/camera_ablation.py --seeds 1 2 3 --methods paper center
    python benchmarks/camera_ablation.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_table import run_training  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "camera_ablation.jsonl"

#: The rows of the table: overrides on top of the config (``paper``: the config's clustering with
#: the camera-aware options off, whatever the config ships).
PAPER = [
    "cluster.camera_norm=none",
    "cluster.distance=jaccard",
    "loss.camera_weight=0",
    "cluster.source=memory",
]
EXTRACT = "cluster.source=extract"
CAMERA = "loss.camera_weight=0.5"
METHODS: dict[str, list[str]] = {
    "paper": PAPER,
    "center": [*PAPER, "cluster.camera_norm=center"],
    "ca_jaccard": [*PAPER, "cluster.distance=ca_jaccard"],
    "center+ca_jaccard": [*PAPER, "cluster.camera_norm=center", "cluster.distance=ca_jaccard"],
    "center+camera": [*PAPER, "cluster.camera_norm=center", CAMERA],
    "ca_jaccard+camera": [*PAPER, "cluster.distance=ca_jaccard", CAMERA],
    "center+ca_jaccard+camera": [
        *PAPER,
        "cluster.camera_norm=center",
        "cluster.distance=ca_jaccard",
        CAMERA,
    ],
    "center+camera+extract both": [
        *PAPER,
        "cluster.camera_norm=center",
        CAMERA,
        EXTRACT,
        "loss.camera_branches=both",
    ],
    "center+ca_jaccard+camera+extract": [
        *PAPER,
        "cluster.camera_norm=center",
        "cluster.distance=ca_jaccard",
        CAMERA,
        EXTRACT,
    ],
    "center+extract": [*PAPER, "cluster.camera_norm=center", EXTRACT],
    "center+camera+extract": [*PAPER, "cluster.camera_norm=center", CAMERA, EXTRACT],
    "one-branch center": [*PAPER, "cluster.camera_norm=center", "model.gray_branch=false"],
    "one-branch center+camera": [
        *PAPER,
        "cluster.camera_norm=center",
        CAMERA,
        "model.gray_branch=false",
    ],
    "one-branch center+camera+extract": [
        *PAPER,
        "cluster.camera_norm=center",
        CAMERA,
        EXTRACT,
        "model.gray_branch=false",
    ],
    "one-branch ca_jaccard": [*PAPER, "cluster.distance=ca_jaccard", "model.gray_branch=false"],
    "shipped": [],
    # the backbone comparison of the default run (issue 24): the shipped options, Lite0 vs Lite2
    "shipped lite0": ["model.backbone=efficientnet_lite0"],
    "shipped lite2": ["model.backbone=efficientnet_lite2"],
}


#: How the table names the rows (method keys otherwise).
LABELS = {
    "paper": "paper pipeline (camera-blind CACL)",
    "center": "paper + camera centring",
    "ca_jaccard": "paper + CA-Jaccard",
    "center+ca_jaccard": "paper + camera centring + CA-Jaccard",
    "center+camera": "paper + centring + camera term (`loss.camera_weight=0.5`)",
    "center+camera+extract": "centring + camera term + fresh features (`cluster.source=extract`) "
    "= **shipped default**",
    "one-branch center+camera+extract": "one-branch baseline, shipped options",
    "center+camera+extract both": "shipped, camera term on both branches",
    "center+ca_jaccard+camera+extract": "shipped + CA-Jaccard",
    "center+extract": "camera centring + fresh features (no camera term)",
    "shipped lite0": "shipped options, EfficientNet-Lite0 (packaged ImageNet weights)",
    "shipped lite2": "shipped options, EfficientNet-Lite2 (packaged ImageNet weights)",
}


#: The table's row order (other methods follow).
ORDER = [
    "paper",
    "center",
    "ca_jaccard",
    "center+ca_jaccard",
    "center+camera",
    "center+camera+extract",
    "one-branch center+camera+extract",
    "center+camera+extract both",
    "center+ca_jaccard+camera+extract",
]


def summarise(method: str, seed: int, config: str, overrides: list[str], result: dict) -> dict:
    """The line kept in the results file: scores, last epoch's clustering, wall time."""
    history = result.get("history") or []
    last = (history[-1].get("cluster") or {}) if history else {}
    return {
        "method": method,
        "seed": seed,
        "config": config,
        "overrides": overrides,
        "mAP": result["mAP"],
        "rank1": result["rank1"],
        "best_epoch": result.get("best_epoch"),
        "ari": last.get("ari"),
        "own_camera_share": last.get("own_camera_share"),
        "own_camera_chance": last.get("own_camera_chance"),
        "multi_camera_clusters": last.get("multi_camera_clusters"),
        "clusters": last.get("clusters"),
        "wall_seconds": result.get("wall_seconds"),
        "cpus": os.cpu_count(),
    }


def mean_spread(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def print_table(path: Path, config: str | None = None) -> None:
    """The Markdown table of the runs in ``path`` (one row per method, mean ± sd over seeds)."""
    rows: dict[str, list[dict]] = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            if config is None or r["config"] == config:
                rows.setdefault(r["method"], []).append(r)
    print(
        "| method | seeds | mAP | rank-1 | ARI (last epoch) | own-camera 10-NN (chance) | "
        "2+ camera clusters | wall time (min) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    order = {m: i for i, m in enumerate(ORDER)}
    for method, results in sorted(rows.items(), key=lambda kv: order.get(kv[0], 99)):
        cells = score_cells(sorted(results, key=lambda r: r["seed"]))
        multi = mean_spread([r["multi_camera_clusters"] for r in results], 2)
        print(
            f"| {LABELS.get(method, method)} | {' | '.join(cells[:-1])} | {multi} | {cells[-1]} |"
        )


def score_cells(runs: list[dict]) -> list[str]:
    """Seeds, mAP, rank-1, ARI, own-camera share (chance) and wall minutes of one table row."""
    chance = mean_spread([r["own_camera_chance"] for r in runs], 2)
    return [
        ",".join(str(r["seed"]) for r in runs),
        mean_spread([r["mAP"] for r in runs]),
        mean_spread([r["rank1"] for r in runs]),
        mean_spread([r["ari"] for r in runs]),
        f"{mean_spread([r['own_camera_share'] for r in runs], 2)} ({chance})",
        mean_spread([(r["wall_seconds"] or 0) / 60 for r in runs], 1),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="synthetic")
    parser.add_argument("--out", type=Path, default=Path("runs/camera_ablation"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--table", action="store_true", help="only print the table of --results")
    parser.add_argument("overrides", nargs="*", help="SECTION.KEY=VALUE for every training run")
    args = parser.parse_args()
    if args.table:
        print_table(args.results)
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    tag = "-".join(o.replace("=", "_").replace(".", "_") for o in args.overrides)
    for seed in args.seeds:
        for method in args.methods:
            overrides = [*args.overrides, *METHODS[method], f"train.seed={seed}"]
            name = f"{method.replace(' ', '_').replace('+', '_')}{'-' + tag if tag else ''}"
            out = args.out / f"{name}-seed{seed}"
            fresh = not (out / "results.json").is_file()
            result = run_training(out, args.config, overrides)
            if fresh:
                line = summarise(method, seed, args.config, overrides, result)
                with open(args.results, "a") as handle:
                    handle.write(json.dumps(line) + "\n")
    print_table(args.results)


if __name__ == "__main__":
    main()
