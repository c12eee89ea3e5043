"""The data loader of one training epoch: P x K batches of the current classes, two views each.

Under DDP every rank loads its slice of each global batch (:class:`CameraAwareIdentitySampler`
with ``rank`` and ``world_size``); with ``data.view_rng=sample`` each item's augmentations come
from a seed of its own (:class:`SeededViews`), the same whatever the number of ranks or workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from cacl.config import Config
from cacl.cores import loader_workers
from cacl.data.image_dataset import TwoViewDataset
from cacl.data.sampler import CameraAwareIdentitySampler, SeededViews
from cacl.data.transforms import colour_view, gray_view
from cacl.data.types import Sample


def train_loader(
    samples: Sequence[Sample],
    classes: np.ndarray,
    camids: np.ndarray,
    cfg: Config,
    epoch: int,
    *,
    gray: bool,
    device: torch.device,
    loader_seed: int,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """Batches of ``train.batch_size / world_size`` items (``colour``, ``gray`` when ``gray``,
    ``index``, ``camid``); ``loader_seed`` seeds the workers' random streams."""
    from cacl.models.backbone import backbone_interpolation

    t, d = cfg.train, cfg.data
    seeded = d.view_rng == "sample"
    interpolation = backbone_interpolation(cfg.model.backbone, cfg.model.input_norm)
    sampler = CameraAwareIdentitySampler(
        classes,
        camids,
        t.batch_size,
        t.num_instances,
        t.iters,
        seed=t.seed,
        rank=rank,
        world_size=world_size,
        positions=seeded,
    )
    sampler.set_epoch(epoch)
    dataset = TwoViewDataset(
        samples,
        colour_view(d.height, d.width, pad=d.pad, interpolation=interpolation),
        gray_view(d.height, d.width, pad=d.pad, interpolation=interpolation) if gray else None,
    )
    return DataLoader(
        SeededViews(dataset, t.seed, epoch) if seeded else dataset,
        batch_size=sampler.local_batch_size,
        sampler=sampler,
        num_workers=loader_workers(d.workers, device),
        pin_memory=device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(loader_seed),
        persistent_workers=False,
    )
