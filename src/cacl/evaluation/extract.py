"""The one feature extraction pass (memory initialisation, relabelling, evaluation, visrank).

With ``shard=True`` under a process group every rank extracts a contiguous share of the samples
and the shares are gathered in rank order, so every rank ends with the features of all samples, in
the order of ``samples``, for 1/world_size of the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from cacl import distributed
from cacl.data.image_dataset import ImageDataset
from cacl.data.types import Sample


@torch.no_grad()
def extract_features(
    forward: Callable[[torch.Tensor], torch.Tensor],
    samples: Sequence[Sample],
    transform: Callable,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 0,
    desc: str = "extract",
    progress: bool = True,
    shard: bool = False,
) -> torch.Tensor:
    """Run ``forward`` (a module in eval mode, or a function of a batch) over every sample.

    Returns an (N, D) float32 CPU tensor in the order of ``samples``. ``shard=True`` splits the
    work over the ranks of the process group (every rank must call it; no effect without a
    process group or with fewer samples than ranks).
    """
    device = torch.device(device)
    world = distributed.get_world_size() if shard else 1
    if world > 1 and len(samples) >= world:
        start, stop = distributed.shard_bounds(len(samples))
        local = extract_features(
            forward,
            list(samples)[start:stop],
            transform,
            device=device,
            batch_size=batch_size,
            workers=workers,
            desc=desc,
            progress=progress and distributed.is_main(),
        )
        return distributed.all_gather_cat(local)
    loader = DataLoader(
        ImageDataset(samples, transform),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    chunks = []
    for images, _ in tqdm(loader, desc=desc, leave=False, disable=not progress):
        chunks.append(forward(images.to(device, non_blocking=True)).float().cpu())
    if not chunks:
        raise ValueError("no samples to extract features from")
    return torch.cat(chunks)
