"""Feature extraction passes (memory initialisation, evaluation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

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
) -> torch.Tensor:
    """Run ``forward`` (a module in eval mode, or a function of a batch) over every sample.

    Returns an (N, D) float32 CPU tensor in the order of ``samples``.
    """
    device = torch.device(device)
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
