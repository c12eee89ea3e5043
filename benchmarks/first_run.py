"""The first run as a newcomer meets it: the whole default ``cacl train`` per seed, timed.

For every seed, optionally with torch restricted to AVX2 (``--avx2``: ``ATEN_CPU_CAPABILITY=avx2
ONEDNN_MAX_CPU_ISA=AVX2``), runs ``cacl train --no-progress train.seed=S`` in a fresh process and
appends one JSON line to ``--out``: the wall seconds of the whole command, the CPU, the plan the
time budget chose, the seconds of each stage and the mAP. Run nothing else beside it.

    python benchmarks/first_run.py --seeds 1 2 3 [--avx2] [overrides ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def one_run(seed: int, avx2: bool, overrides: list[str], folder: Path) -> dict:
    env = {**os.environ, **(AVX2 if avx2 else {})}
    output = folder / f"seed{seed}{'-avx2' if avx2 else ''}"
    command = [sys.executable, "-m", "cacl", "train", "--no-progress", "--output", str(output)]
    start = time.monotonic()
    done = subprocess.run(
        [*command, f"train.seed={seed}", *overrides], env=env, capture_output=True, text=True
    )
    wall = time.monotonic() - start
    if done.returncode:
        return {"seed": seed, "avx2": avx2, "error": done.stderr[-2000:], "wall_s": round(wall, 1)}
    capability = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip()
    results = json.loads((output / "results.json").read_text())
    plan = results.get("budget") or {}
    return {
        "seed": seed,
        "cpu": cpu_model(),
        "capability": capability,
        "overrides": overrides,
        "wall_s": round(wall, 1),
        "train_wall_s": results["wall_seconds"],
        "mAP": results["mAP"],
        "initial_mAP": results["initial_mAP"],
        "best_epoch": results["best_epoch"],
        "schedule": [plan.get("epochs"), plan.get("iters")],
        "plan": plan.get("text"),
        "stages": results["stages"],
        "epochs": [
            {k: r.get(k) for k in ("relabel_seconds", "train_seconds", "eval_seconds")}
            for r in results["history"]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--avx2", action="store_true", help="restrict torch's kernels to AVX2")
    parser.add_argument("--out", default="benchmarks/results/first_run.jsonl")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cacl-first-run-") as folder:
        for seed in args.seeds:
            row = one_run(seed, args.avx2, args.overrides, Path(folder))
            print(json.dumps(row), flush=True)
            with open(args.out, "a") as handle:
                handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
