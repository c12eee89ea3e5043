"""The test suite's wall time and the disk its temporary folders take at peak and at the end.

Runs ``python -m pytest`` (extra arguments passed on) and samples the size of pytest's
temporary root (``$TMPDIR/pytest-of-$USER``) every ``--every`` seconds; prints one JSON line.
The root is measured as it grows from what earlier sessions left there (reported apart).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed while walking
                pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--every", type=float, default=5.0, help="seconds between two samples")
    ap.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = ap.parse_args()
    root = Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    before = tree_bytes(root)
    peak, done = before, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(args.every):
            peak = max(peak, tree_bytes(root))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", *args.pytest_args])
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    after = tree_bytes(root)
    gib = 2**30
    print(json.dumps({
        "rc": rc, "wall_s": round(wall, 1), "tmp_root": str(root),
        "before_gib": round(before / gib, 2), "peak_gib": round(max(peak, after) / gib, 2),
        "left_gib": round(after / gib, 2),
    }))  # fmt: skip
    sys.exit(rc)


if __name__ == "__main__":
    main()
