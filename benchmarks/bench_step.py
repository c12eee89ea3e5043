"""Seconds per training step of the default run for loader workers x torch threads.

Builds the default run (``cacl train`` with no arguments: memory banks, pseudo labels), then
times ``--steps`` steps after ``--warmup`` for every setting, each with a fresh loader, so that
the workers' start-up is paid in the warm-up. Run it once as it is and once with
``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`` to see a CPU without AVX-512. Appends one
JSON line per setting to ``--out``.

    python benchmarks/bench_step.py [--workers 0 1 2] [--threads 1 2] [--steps 15]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from itertools import product
from pathlib import Path

import torch

from cacl.config import load_config
from cacl.engine.step import train_step
from cacl.engine.trainer import Trainer


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_steps(trainer: Trainer, warmup: int, steps: int) -> list[float]:
    """Wall seconds of each of ``warmup + steps`` steps (loading included)."""
    t = trainer.cfg.train
    t.iters = warmup + steps
    loader = trainer.epoch_loader()
    classes = torch.from_numpy(trainer.classes)
    trainer.model.train()
    times, last = [], time.perf_counter()
    for batch in loader:
        train_step(
            trainer.train_model,
            batch,
            classes[batch["index"]],
            trainer.memory,
            trainer.memory_tilde,
            trainer.optimizer,
            trainer.cfg.loss,
            precision=trainer.precision,
        )
        now = time.perf_counter()
        times.append(now - last)
        last = now
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/bench_step.jsonl")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config("synthetic", args.overrides)
    trainer = Trainer(cfg, Path("/tmp/cacl-bench-step"), progress=False)
    trainer.init_memory()
    trainer.relabel()
    machine = {
        "cpu": cpu_model(),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
    }
    print(machine)
    for workers, threads in product(args.workers, args.threads):
        cfg.data.workers = workers
        torch.set_num_threads(threads)
        times = time_steps(trainer, args.warmup, args.steps)
        steady = times[args.warmup :]
        mean = sum(steady) / len(steady)
        row = {
            **machine,
            "workers": workers,
            "threads": threads,
            "step_s": round(mean, 4),
            "min_step_s": round(min(steady), 4),
            "warmup_s": round(sum(times[: args.warmup]), 3),
            "steps": len(steady),
        }
        print(json.dumps(row), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
