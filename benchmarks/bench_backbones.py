"""Images per second of the backbones on this machine: training step and inference.

For each backbone (last stride 1, random weights: speed does not depend on them) and input size it
times, after ``--warmup`` untimed batches,

- ``train``: forward + backward of ``trunk(images).mean()`` in train mode (no optimiser step),
  batch ``--train-batch`` (32);
- ``eval``: forward in eval mode under ``torch.no_grad()``, batch ``--eval-batch`` (64);

and prints the median over ``--iters`` batches as images / s, with the parameter count and the
feature-map size, for each memory layout of ``--layouts`` (``contiguous`` NCHW, ``channels_last``
NHWC weights as ``train.channels_last`` sets them). Timings are noisy when other processes share the CPUs: the load average is
printed before and after.

    python benchmarks/bench_backbones.py                    # 2 threads, 128x64 and 256x128
    python benchmarks/bench_backbones.py --threads 1 --sizes 256x128 --backbones efficientnet_lite0
    python benchmarks/bench_backbones.py --sizes 128x64 --layouts contiguous channels_last
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch

from cacl.models import build_backbone, use_channels_last

DEFAULT_BACKBONES = ("resnet18", "resnet50", "efficientnet_lite0")
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
    trunk = build_backbone(name, "none", last_stride=1)
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
        fmap = trunk(eval_images[:1]).shape
    return {
        "params": params,
        "map": f"{fmap[1]}x{fmap[2]}x{fmap[3]}",
        "train": args.train_batch / train_s,
        "eval": args.eval_batch / eval_s,
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {args.threads} threads, train batch {args.train_batch} "
        f"(fwd+bwd), eval batch {args.eval_batch} (no_grad), median of {args.iters} after "
        f"{args.warmup} warm-up; {load_average()}"
    )
    header = f"{'backbone':<20} {'input':>8} {'layout':>14} {'params M':>9} {'feature map':>13}"
    print(f"{header} {'train img/s':>12} {'eval img/s':>11}")
    for size in args.sizes:
        for name in args.backbones:
            for layout in args.layouts:
                row = measure(name, size, layout, args)
                print(
                    f"{name:<20} {size[0]:>4}x{size[1]:<3} {layout:>14} {row['params']:>9.2f} "
                    f"{row['map']:>13} {row['train']:>12.1f} {row['eval']:>11.1f}",
                    flush=True,
                )
    print(load_average())


if __name__ == "__main__":
    main()
