"""Seconds and peak resident memory of benchmark stages, each size in a fresh process.

The peak of a stage is the kernel's high-water mark of the process (``VmHWM``), reset at the start
of the stage through ``/proc/self/clear_refs``; where that is not allowed, a thread samples the
resident size every 2 ms instead (which may miss very short peaks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GB = 1024**3


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def current_rss_gb() -> float:
    """Resident set size of this process now, GiB."""
    return _status_kb("VmRSS") * 1024 / GB


class StageMeter:
    """Records ``{stage: {"seconds": s, "cpu_seconds": c, "peak_gb": p}}`` for consecutive stages.

    ``cpu_seconds`` (user + system time of all the process's threads) is less sensitive than the
    wall clock to other programs competing for the same cores.
    """

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.method = "VmHWM"
        except OSError:
            self.method = "sampling"

    def _reset(self) -> None:
        if self.method == "VmHWM":
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block and record its peak RSS."""
        self._reset()
        peak = [current_rss_gb()]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.002):
                peak[0] = max(peak[0], current_rss_gb())

        sampler = threading.Thread(target=sample, daemon=True)
        if self.method == "sampling":
            sampler.start()
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            cpu_seconds = time.process_time() - cpu_start
            stop.set()
            if self.method == "VmHWM":
                peak[0] = _status_kb("VmHWM") * 1024 / GB
            else:
                sampler.join()
            self.stages[name] = {"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_gb": peak[0]}


def emit(result: dict[str, Any]) -> None:
    """Print the worker's result as the last line of its output."""
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(script: str, args: list[str]) -> dict[str, Any]:
    """Run ``script --worker args`` in a fresh interpreter and return its result."""
    proc = subprocess.run(
        [sys.executable, script, "--worker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"error": (proc.stderr or proc.stdout)[-2000:], "returncode": proc.returncode}


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, and the number of CPUs."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def print_stage(name: str, stage: dict[str, float]) -> None:
    print(
        f"  {name:<22} {stage['seconds']:8.2f} s wall {stage['cpu_seconds']:8.2f} s CPU   "
        f"peak RSS {stage['peak_gb']:5.2f} GB"
    )
