"""Time the memory + loss part of one CACL step (no backbone): losses forward and backward on
both views, then the two memory updates.

Sizes default to MSMT17's training set: N = 32,621 memory rows, D = 2048, B = 64, about 3,000
classes. A second line times a naive version that recomputes every centroid from the whole
memory each step (O(N * D), as research code does), for comparison.

    python benchmarks/bench_memory_loss.py [--n 32621 --dim 2048 --batch 64 --classes 3000]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from cacl.config import LossConfig
from cacl.engine.step import compute_losses
from cacl.memory import InstanceMemory


def naive_centroids(features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    sums = torch.zeros(num_classes, features.shape[1]).index_add_(0, labels, features)
    return sums / torch.bincount(labels, minlength=num_classes).clamp_min(1).unsqueeze(1).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=32621)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--classes", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, args.classes, (args.n,), generator=g)
    labels[: args.classes] = torch.arange(args.classes)
    memory = InstanceMemory(torch.randn(args.n, args.dim, generator=g))
    memory_tilde = InstanceMemory(torch.randn(args.n, args.dim, generator=g))
    memory.set_labels(labels)
    memory_tilde.set_labels(labels)
    cfg = LossConfig()

    def batch():
        index = torch.randint(0, args.n, (args.batch,), generator=g)
        out = {
            k: F.normalize(torch.randn(args.batch, args.dim, generator=g), dim=1).requires_grad_()
            for k in ("x", "z", "x_tilde")
        }
        return index, out

    def step(naive: bool) -> float:
        index, out = batch()
        t0 = time.perf_counter()
        if naive:  # recompute the centroids from all N rows, as research code does each step
            memory.centroids = naive_centroids(memory.features, labels, args.classes)
            memory_tilde.centroids = naive_centroids(memory_tilde.features, labels, args.classes)
        terms = compute_losses(out, labels[index], memory, memory_tilde, cfg)
        terms["total"].backward()
        memory.update(index, out["x"].detach())
        memory_tilde.update(index, out["x_tilde"].detach())
        return time.perf_counter() - t0

    print(
        f"N={args.n} D={args.dim} B={args.batch} classes={args.classes} "
        f"threads={torch.get_num_threads()}"
    )
    for naive in (False, True):
        step(naive)  # warm-up
        times = sorted(step(naive) for _ in range(args.steps))
        name = "naive centroids (O(N*D) per step)" if naive else "cacl (incremental centroids)"
        print(
            f"{name:36s} median {times[len(times) // 2] * 1000:7.1f} ms  min {times[0] * 1000:7.1f} ms"
        )
        if naive:
            memory.set_labels(labels)
            memory_tilde.set_labels(labels)


if __name__ == "__main__":
    main()
