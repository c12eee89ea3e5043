"""Does the gray branch help? One-branch vs CACL on synthetic sets with controlled camera cues.

The sets (all the `small` preset, data seed 0, written once under ``--sets``):

- ``colour``: the colour cast is the only camera cue (``--background shared --sensor shared``):
  the paper's premise, colour is what separates the cameras;
- ``nocast``: no colour cast (``--cast 0``), per-camera backgrounds and sensors;
- ``default``: today's set (every cue per camera), the one ``cacl train`` uses.

Clustering: ``shipped`` (the `synthetic` config as it is: camera-aware) or ``paper`` (the
camera-blind pipeline of the paper, the same overrides as ``camera_ablation.py``'s ``paper`` row).
Methods: ``cacl`` (the config), ``one-branch`` (``model.gray_branch=false``), ``cacl-gamma4``
(the authors' code's focal gamma, ``loss.gamma=4``).

Each run is a ``cacl train`` in its own process, one after the other; finished runs are skipped
and interrupted ones resumed. One JSON line per finished run is appended to ``--results`` (kept in
git); the table reads that file and, for the ``default`` set, the equivalent runs of
``camera_ablation.jsonl`` (the same config and overrides), so nothing is run twice.

    python benchmarks/ablation_table.py --sets-dir runs/sets --out runs/ablation \\
        --sets colour --clustering shipped --methods cacl one-branch --seeds 1 2 3
    python benchmarks/ablation_table.py --table
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from camera_ablation import PAPER, score_cells, summarise  # noqa: E402
from camera_ablation import RESULTS as CAMERA_RESULTS  # noqa: E402
from synthetic_table import run_training  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ablation_table.jsonl"

#: ``cacl synth`` options of each set (on top of ``--preset small --seed 0``).
SETS: dict[str, list[str]] = {
    "colour": ["--background", "shared", "--sensor", "shared"],
    "nocast": ["--cast", "0"],
    "default": [],
}
SET_LABELS = {
    "colour": "(a) colour cast the only camera cue",
    "nocast": "(b) no colour cast, other cues per camera",
    "default": "(c) today's set, every cue per camera",
}
CLUSTERING: dict[str, list[str]] = {"shipped": [], "paper": PAPER}
METHODS: dict[str, list[str]] = {
    "one-branch": ["model.gray_branch=false"],
    "cacl": [],
    "cacl-gamma4": ["loss.gamma=4"],
}
#: Runs of ``camera_ablation.jsonl`` that are the (default set, clustering, method) cells.
CAMERA_ABLATION_EQUIVALENTS = {
    ("shipped", "cacl"): "center+camera+extract",
    ("shipped", "one-branch"): "one-branch center+camera+extract",
    ("paper", "cacl"): "paper",
}


def ensure_set(sets_dir: Path, name: str) -> Path:
    """Write the set ``name`` under ``sets_dir`` once (``cacl synth`` skips an identical set)."""
    root = sets_dir / name
    cmd = [
        sys.executable,
        "-m",
        "cacl",
        "synth",
        str(root),
        "--preset",
        "small",
        "--seed",
        "0",
        "--no-progress",
        *SETS[name],
    ]
    subprocess.run(cmd, check=True)
    return root


def load_rows(results: Path, camera_results: Path) -> dict[tuple[str, str, str], list[dict]]:
    """(set, clustering, method) -> result lines, the camera ablation's equivalents included."""
    rows: dict[tuple[str, str, str], list[dict]] = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                rows.setdefault((r["set"], r["clustering"], r["method"]), []).append(r)
    if camera_results.is_file():
        wanted = {v: k for k, v in CAMERA_ABLATION_EQUIVALENTS.items()}
        for line in camera_results.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                if r["config"] == "synthetic" and r["method"] in wanted:
                    clustering, method = wanted[r["method"]]
                    rows.setdefault(("default", clustering, method), []).append(r)
    return rows


def print_table(results: Path, camera_results: Path) -> None:
    rows = load_rows(results, camera_results)
    print(
        "| set | clustering | method | seeds | mAP | rank-1 | ARI (last epoch) | "
        "own-camera 10-NN (chance) | wall time (min) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    order = [(s, c, m) for s in SETS for c in CLUSTERING for m in METHODS]
    for key in order:
        if key not in rows:
            continue
        runs = sorted(rows[key], key=lambda r: r["seed"])
        set_name, clustering, method = key
        print(
            f"| {SET_LABELS[set_name]} | {clustering} | {method} | {' | '.join(score_cells(runs))} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="synthetic")
    parser.add_argument("--sets-dir", type=Path, default=Path("runs/sets"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--camera-results", type=Path, default=CAMERA_RESULTS)
    parser.add_argument("--sets", nargs="+", default=["colour"], choices=list(SETS))
    parser.add_argument("--clustering", nargs="+", default=["shipped"], choices=list(CLUSTERING))
    parser.add_argument(
        "--methods", nargs="+", default=["cacl", "one-branch"], choices=list(METHODS)
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--table", action="store_true", help="only print the table of --results")
    args = parser.parse_args()
    if not args.table:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        for set_name in args.sets:
            root = ensure_set(args.sets_dir, set_name).resolve()
            data = [] if set_name == "default" else ["data.name=market1501", f"data.root={root}"]
            for seed in args.seeds:
                for clustering in args.clustering:
                    for method in args.methods:
                        overrides = [
                            *data,
                            *CLUSTERING[clustering],
                            *METHODS[method],
                            f"train.seed={seed}",
                        ]
                        out = args.out / f"{set_name}-{clustering}-{method}-seed{seed}"
                        fresh = not (out / "results.json").is_file()
                        result = run_training(out, args.config, overrides)
                        if fresh:
                            line = summarise(method, seed, args.config, overrides, result)
                            line.update(set=set_name, clustering=clustering)
                            with open(args.results, "a") as handle:
                                handle.write(json.dumps(line) + "\n")
    print_table(args.results, args.camera_results)


if __name__ == "__main__":
    main()
