"""Images per second of the backbones on this machine: training step and inference.

For each backbone (last stride 1, random weights: speed does not depend on them) and input size it
times, after ``--warmup`` untimed batches,

- ``train``: forward + backward of ``trunk(images).mean()`` in train mode (no optimiser step),
  batch ``--train-batch`` (32);
- ``eval``: forward in eval mode under ``torch.no_grad()``, batch ``--eval-batch`` (64);

and prints the median over ``--iters`` batches as images / s, with the parameter count, the
feature size and the peak resident memory of the process (each row runs in a fresh process:
weights, the training step's activations and gradients, the eval batch; ``ru_maxrss``), for each
memory layout of ``--layouts`` (``contiguous`` NCHW, ``channels_last`` NHWC weights as
``train.channels_last`` sets them). Any timm name works (ViTs are built for the input size).
Timings are noisy when other processes share the CPUs: the load average is printed before and
after. ``--results FILE`` appends one JSON line per row.

    python benchmarks/bench_backbones.py                    # 2 threads, 128x64 and 256x128
    python benchmarks/bench_backbones.py --threads 1 --sizes 256x128 --backbones efficientnet_lite0
    python benchmarks/bench_backbones.py --sizes 128x64 --layouts contiguous channels_last
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

from cacl.models import build_backbone, use_channels_last

DEFAULT_BACKBONES = (
    "efficientnet_lite0",
    "efficientnet_lite2",
    "resnet50",
    "vit_small_patch16_224",
    "vit_base_patch16_clip_224.openai",
)
LAYOUTS = ("contiguous", "channels_last")


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def median_seconds(step: Callable[[], None], warmup: int, iters: int) -> float:
    """Median wall-clock seconds of ``step()`` over ``iters`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(
    name: str, size: tuple[int, int], layout: str, args: argparse.Namespace
) -> dict[str, float | str]:
    """Train and eval images / s of backbone ``name`` at input ``size`` (H, W) in ``layout``."""
    torch.manual_seed(0)
    trunk = build_backbone(name, "none", last_stride=1, image_size=size)
    if layout == "channels_last":
        use_channels_last(trunk)
    params = sum(p.numel() for p in trunk.parameters()) / 1e6
    train_images = torch.randn(args.train_batch, 3, *size)
    eval_images = torch.randn(args.eval_batch, 3, *size)

    def train_step() -> None:
        trunk.zero_grad(set_to_none=True)
        trunk(train_images).mean().backward()

    def eval_step() -> None:
        with torch.no_grad():
            trunk(eval_images)

    trunk.train()
    train_s = median_seconds(train_step, args.warmup, args.iters)
    trunk.eval()
    eval_s = median_seconds(eval_step, args.warmup, args.iters)
    with torch.no_grad():
        out = trunk(eval_images[:1]).shape
    return {
        "params": params,
        "map": "x".join(str(v) for v in out[1:]),  # a map (C x h x w) or a pooled feature (C)
        "train": args.train_batch / train_s,
        "eval": args.eval_batch / eval_s,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(128, 64), (256, 128)])
    parser.add_argument(
        "--layouts", nargs="+", choices=LAYOUTS, default=["channels_last"], help="memory layouts"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--eval-batch", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    parser.add_argument("--iters", type=int, default=3, help="timed batches (median)")
    parser.add_argument("--results", help="append one JSON line per row to this file")
    parser.add_argument(
        "--one", nargs=3, metavar=("NAME", "SIZE", "LAYOUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:  # a row in this (fresh) process: its peak memory is the row's own
        name, size, layout = args.one
        print(json.dumps(measure(name, parse_size(size), layout, args)))
        return

    print(
        f"torch {torch.__version__}, {args.threads} threads, train batch {args.train_batch} "
        f"(fwd+bwd), eval batch {args.eval_batch} (no_grad), median of {args.iters} after "
        f"{args.warmup} warm-up; {load_average()}"
    )
    header = f"{'backbone':<32} {'input':>8} {'layout':>14} {'params M':>9} {'features':>13}"
    print(f"{header} {'train img/s':>12} {'eval img/s':>11} {'peak MB':>8}")
    for size in args.sizes:
        for name in args.backbones:
            for layout in args.layouts:
                row = run_row(name, size, layout, args)
                print(
                    f"{name:<32} {size[0]:>4}x{size[1]:<3} {layout:>14} {row['params']:>9.2f} "
                    f"{row['map']:>13} {row['train']:>12.1f} {row['eval']:>11.1f} "
                    f"{row['peak_mb']:>8.0f}",
                    flush=True,
                )
                if args.results:
                    line = {"backbone": name, "size": f"{size[0]}x{size[1]}", "layout": layout}
                    line.update(row, threads=args.threads, train_batch=args.train_batch)
                    line.update(eval_batch=args.eval_batch, torch=torch.__version__)
                    with open(args.results, "a") as handle:
                        handle.write(json.dumps(line) + "\n")
    print(load_average())


def run_row(name: str, size: tuple[int, int], layout: str, args: argparse.Namespace) -> dict:
    """:func:`measure` in a fresh Python process (so that its peak memory is its own)."""
    cmd = [sys.executable, __file__, "--one", name, f"{size[0]}x{size[1]}", layout]
    cmd += ["--threads", str(args.threads), "--train-batch", str(args.train_batch)]
    cmd += ["--eval-batch", str(args.eval_batch), "--warmup", str(args.warmup)]
    cmd += ["--iters", str(args.iters)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
