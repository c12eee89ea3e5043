"""``cacl crops`` on video: frames decoded per second, crops written per second, peak memory,
and the second run after a kill -9.

Writes a synthetic site of ``--cams`` cameras with one ``--width`` x ``--height`` MPEG-4 video
of ``--minutes`` minutes at ``--fps`` each (``cacl synth --site --video``), then runs
``cacl crops`` on it three times in fresh processes: whole; killed with SIGKILL after
``--kill-after`` seconds; and again on the killed run's folder (it continues). Prints one JSON
line per run and appends them to ``--out``. Run nothing else beside it.

    python benchmarks/bench_crops.py [--minutes 3 --fps 10 --width 1280 --height 720 --cams 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from first_run import cpu_model  # noqa: E402


def crops_command(site: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "cacl", "crops", str(site), str(out), "--no-progress"]


def peak_child_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def counts(out: Path) -> tuple[int, int]:
    """Rows of tracklets.csv and crop files on disk."""
    with open(out / "tracklets.csv", newline="") as handle:
        rows = sum(1 for _ in csv.DictReader(handle))
    files = sum(1 for p in out.rglob("*.jpg"))
    return rows, files


def summary_numbers(out: Path) -> dict:
    record = json.loads((out / "crops.json").read_text())
    cams = record["cameras"].values()
    return {
        "frames_decoded": sum(c["frames_decoded"] for c in cams),
        "crops": sum(c["crops"] for c in cams),
        "written": sum(c["written"] for c in cams),
        "already_there": sum(c["already_there"] for c in cams),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--cams", type=int, default=2)
    parser.add_argument("--kill-after", type=float, default=None, help="seconds (half the run)")
    parser.add_argument("--out", default="benchmarks/results/bench_crops.jsonl")
    args = parser.parse_args()
    from cacl.data.synth.scene_render import generate_site

    with tempfile.TemporaryDirectory(prefix="cacl-crops-") as folder:
        site = Path(folder) / "site"
        start = time.perf_counter()
        generate_site(
            site, preset="site", seed=1, progress=False, video=True, num_cams=args.cams,
            cams_per_id=(2, min(4, args.cams)),
            duration=args.minutes * 60, fps=args.fps, width=args.width, height=args.height,
        )  # fmt: skip
        print(f"site written in {time.perf_counter() - start:.1f} s", flush=True)
        common = {
            "cpu": cpu_model(),
            "video": f"{args.cams} x {args.width}x{args.height}, {args.minutes} min at {args.fps} fps",
        }
        rows = []
        whole = Path(folder) / "whole"
        start = time.perf_counter()
        subprocess.run(crops_command(site, whole), check=True, capture_output=True)
        wall = time.perf_counter() - start
        numbers = summary_numbers(whole)
        rows.append(
            {**common, "run": "whole", "wall_s": round(wall, 1),
             "frames_per_s": round(numbers["frames_decoded"] / wall, 1),
             "crops_per_s": round(numbers["written"] / wall, 1),
             "peak_rss_mb": round(peak_child_mb(), 1), **numbers}
        )  # fmt: skip
        killed = Path(folder) / "killed"
        process = subprocess.Popen(
            crops_command(site, killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(args.kill_after if args.kill_after is not None else wall / 2)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        on_disk = sum(1 for p in killed.rglob("*.jpg"))
        start = time.perf_counter()
        subprocess.run(crops_command(site, killed), check=True, capture_output=True)
        again = time.perf_counter() - start
        numbers = summary_numbers(killed)
        n_rows, n_files = counts(killed)
        rows.append(
            {**common, "run": "after kill -9", "crops_before_kill": on_disk,
             "wall_s": round(again, 1), "rows": n_rows, "files": n_files,
             "same_as_whole": (whole / "tracklets.csv").read_bytes()
             == (killed / "tracklets.csv").read_bytes(), **numbers}
        )  # fmt: skip
        with open(args.out, "a") as handle:
            for row in rows:
                handle.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
