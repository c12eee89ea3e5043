"""Images per second of the training data loader alone (both views decoded and augmented),
to compare with the speed of a training step.

    python benchmarks/bench_loader.py [--preset small --height 128 --width 64 --batches 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from torch.utils.data import DataLoader

from cacl.data.default import resolve_dataset
from cacl.data.image_dataset import TwoViewDataset
from cacl.data.sampler import CameraAwareIdentitySampler
from cacl.data.transforms import colour_view, gray_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--height", type=int, default=128)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    dataset = resolve_dataset("synthetic", synth_preset=args.preset)
    labels = np.array([s.pid for s in dataset.train])
    camids = np.array([s.camid for s in dataset.train])
    views = TwoViewDataset(
        dataset.train,
        colour_view(args.height, args.width),
        gray_view(args.height, args.width),
    )
    print(f"{len(dataset.train)} images, {args.height}x{args.width}, batch {args.batch}")
    for workers in args.workers:
        sampler = CameraAwareIdentitySampler(labels, camids, args.batch, 4, args.batches + 2)
        loader = DataLoader(views, batch_size=args.batch, sampler=sampler, num_workers=workers)
        iterator = iter(loader)
        next(iterator), next(iterator)  # start-up and warm-up
        t0 = time.perf_counter()
        count = sum(len(batch["index"]) for batch in iterator)
        seconds = time.perf_counter() - t0
        print(f"workers {workers}: {count / seconds:7.1f} images/s (two views each)")


if __name__ == "__main__":
    main()
