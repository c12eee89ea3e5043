"""The site pipeline per seed and setting: ``cacl synth --site``, ``cacl crops``, ``cacl train``.

For every seed the synthetic site of that seed is generated (``--faults F`` scales the tracker's
faults) and cut into crops once; then ``cacl train --config site`` runs for each setting of
``cluster.constraints`` in a fresh process, and one JSON line per run is appended to ``--out``:
mAP, rank-1, the last epoch's ARI of the pseudo labels, the share of tracklets broken and of
cannot-link pairs kept apart, clusters spanning 2+ cameras, the schedule the time budget chose,
the wall seconds and the CPU. Run nothing else beside it.

    python benchmarks/site_table.py --seeds 1 2 3 --settings none must_link both [--faults 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu_model  # noqa: E402


def cacl(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "cacl", *args], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"cacl {' '.join(args)} failed:\n{done.stderr[-3000:]}")


def one_run(seed: int, setting: str, site: Path, crops: Path, out: Path, extra: list[str]) -> dict:
    start = time.monotonic()
    cacl(
        "train", "--config", "site", "--no-progress", "--output", str(out),
        f"data.root={crops}", f"data.eval_root={site / 'eval'}",
        f"train.seed={seed}", f"cluster.constraints={setting}", *extra,
    )  # fmt: skip
    wall = time.monotonic() - start
    results = json.loads((out / "results.json").read_text())
    last = results["history"][-1]["cluster"]
    plan = results.get("budget") or {}
    import torch

    return {
        "seed": seed,
        "setting": setting,
        "overrides": extra,
        "split": "split_threshold" in last,  # cluster.split cut the tracklets (auto: by default)
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "mAP": results["mAP"],
        "rank1": results["rank1"],
        "initial_mAP": results["initial_mAP"],
        "best_epoch": results["best_epoch"],
        "ari": last.get("ari"),
        "tracklets_broken": last.get("tracklets_broken"),
        "cannot_link_separated": last.get("cannot_link_separated"),
        "multi_camera_clusters": last.get("multi_camera_clusters"),
        "clusters": last.get("clusters"),
        "outliers": last.get("outliers"),
        "schedule": [plan.get("epochs"), plan.get("iters")],
        "wall_s": round(wall, 1),
    }


def summarize(path: str) -> None:
    """Mean +- sd per (faults, setting) over the seeds of ``path``: the README's table."""
    import numpy as np

    groups: dict[tuple, list[dict]] = {}
    for line in Path(path).read_text().splitlines():
        row = json.loads(line)
        split = row.get("split", "cluster.split=on" in row["overrides"])  # rows before auto
        cpu = row.get("cpu", "?").split()[0]  # figures of two CPUs are not one sample
        key = (row["faults"], row["setting"], tuple(row["overrides"]), split, cpu)
        groups.setdefault(key, []).append(row)
    keys = ("mAP", "rank1", "ari", "tracklets_broken", "cannot_link_separated",
            "multi_camera_clusters", "wall_s")  # fmt: skip
    print("| faults | setting | split | CPU | seeds | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 5) + "|")
    for (faults, setting, extra, split, cpu), rows in sorted(groups.items()):
        cells = []
        for key in keys:
            values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=float)
            digits = 0 if key == "wall_s" else 3
            cells.append(
                f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"
            )
        seeds = ",".join(str(r["seed"]) for r in rows)
        name = setting + (" " + " ".join(extra) if extra else "")
        cut = "on" if split else "off"
        print(f"| {faults:g} | {name} | {cut} | {cpu} | {seeds} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--settings", nargs="+", default=["none", "must_link", "both"])
    parser.add_argument("--faults", type=float, default=1.0)
    parser.add_argument("--out", default="benchmarks/results/site_table.jsonl")
    parser.add_argument("overrides", nargs="*", help="more SECTION.KEY=VALUE for cacl train")
    parser.add_argument("--summary", action="store_true", help="print the table of --out and stop")
    parser.add_argument(
        "--keep", metavar="DIR", help="keep the sites, crops and runs in DIR (default: deleted)"
    )
    args = parser.parse_args()
    if args.summary:
        summarize(args.out)
        return
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cacl-site-") as scratch:
        folder = args.keep or scratch
        for seed in args.seeds:
            site, crops = Path(folder) / f"site{seed}", Path(folder) / f"crops{seed}"
            start = time.monotonic()
            cacl("synth", str(site), "--site", "--seed", str(seed), "--faults", str(args.faults),
                 "--no-progress")  # fmt: skip
            synth_s = time.monotonic() - start
            cacl("crops", str(site), str(crops), "--no-progress")
            crops_s = time.monotonic() - start - synth_s
            for setting in args.settings:
                out = Path(folder) / f"run-{seed}-{setting}"
                row = one_run(seed, setting, site, crops, out, args.overrides)
                row.update(faults=args.faults, synth_s=round(synth_s, 1), crops_s=round(crops_s, 1))
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
