"""A short CACL training on one GPU (or under torchrun): images/s, peak GPU memory, stage seconds.

The `market1501` config (ResNet-50, 256x128, batch 64, the paper's pipeline) on the synthetic
`market` preset (Market-1501 scale, generated on first use), random initialisation unless
``--pretrained imagenet`` (no download is needed for `none`). Each stage of the trainer is timed
with CUDA synchronisation: memory initialisation, every relabelling (with its clustering stages),
every training epoch (images/s), every evaluation.

    python benchmarks/gpu_train_check.py --amp false --iters 200
    torchrun --nproc_per_node 2 benchmarks/gpu_train_check.py --amp true --iters 200
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch


def timed(store: dict[str, list[float]], name: str, method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = method(*args, **kwargs)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        store.setdefault(name, []).append(round(time.perf_counter() - start, 2))
        return out

    return wrapper


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amp", choices=["true", "false"], default="false")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--preset", default="market")
    parser.add_argument("--output", type=Path, help="run folder (default: a temporary one)")
    parser.add_argument(
        "--override", nargs="*", default=[], help="more SECTION.KEY=VALUE config overrides"
    )
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print(
            "gpu_train_check: no CUDA device here (torch.cuda.is_available() is False); "
            "run it on a machine with an NVIDIA GPU",
            file=sys.stderr,
        )
        return 2

    from cacl import distributed
    from cacl.config import apply_overrides, load_config
    from cacl.engine.trainer import Trainer

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    cfg = load_config("market1501")
    apply_overrides(
        cfg,
        [
            "data.name=synthetic",
            f"data.synth_preset={args.preset}",
            "data.root=null",
            f"model.backbone={args.backbone}",
            f"model.pretrained={args.pretrained}",
            f"train.amp={args.amp}",
            f"train.epochs={args.epochs}",
            f"train.iters={args.iters}",
            f"train.eval_every={args.epochs}",
            "train.device=auto",
            *args.override,
        ],
    )
    output = args.output or Path(tempfile.mkdtemp(prefix="cacl-gpu-check-")) / "run"
    stages: dict[str, list[float]] = {}
    for name in ("init_memory", "relabel", "train_epoch", "evaluate"):
        setattr(Trainer, name, timed(stages, name, getattr(Trainer, name)))
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(cfg, output, progress=False)
    results = trainer.fit()
    if not distributed.is_main():
        return 0
    batch = cfg.train.batch_size
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "world_size": results["world_size"],
        "backbone": args.backbone,
        "amp": args.amp,
        "size": f"{cfg.data.height}x{cfg.data.width}",
        "batch": batch,
        "train_images": len(trainer.dataset.train),
        "stage_seconds": stages,
        "clustering_seconds": [h["cluster"].get("seconds") for h in results["history"]],
        "train_images_per_second": [
            round(args.iters * batch / s, 1) for s in stages.get("train_epoch", [])
        ],
        "peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 1024**3, 2),
        "mAP": results["mAP"],
        "wall_seconds": results["wall_seconds"],
    }
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
