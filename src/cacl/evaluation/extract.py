"""The one feature-extraction pass: memory initialisation, relabelling, evaluation, visrank, the
:class:`cacl.FeatureExtractor` and the hand-made baselines all run :func:`extract_batches`.

With ``shard=True`` under a process group every rank extracts a contiguous share of the samples
and the shares are gathered in rank order, so every rank ends with the features of all samples, in
the order of ``samples``, for 1/world_size of the work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from cacl import distributed
from cacl.data.image_dataset import ImageDataset
from cacl.data.types import Sample


@torch.no_grad()
def extract_batches(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 128,
    workers: int = 0,
    desc: str = "extract",
    progress: bool = True,
    stop_on_error: bool = False,
) -> tuple[torch.Tensor | None, list[tuple[int, str]]]:
    """Run ``forward`` over a dataset of ``(tensor, index, reason)`` items, in order.

    Returns the float32 CPU features of the items read (None when there are none) and
    ``(index, reason)`` for the others (see :class:`~cacl.data.image_dataset.ImageDataset`);
    with ``stop_on_error`` it stops at the first batch that holds one.
    """
    device = torch.device(device)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers if len(dataset) > batch_size else 0,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    chunks: list[torch.Tensor] = []
    errors: list[tuple[int, str]] = []
    with tqdm(total=len(dataset), desc=desc, unit="img", leave=False, disable=not progress) as bar:
        for images, indices, reasons in loader:
            ok = torch.tensor([not r for r in reasons], dtype=torch.bool)
            errors += [(int(i), r) for i, r in zip(indices, reasons, strict=True) if r]
            if errors and stop_on_error:
                break
            if not ok.all():
                images = images[ok]
            if len(images):
                chunks.append(forward(images.to(device, non_blocking=True)).float().cpu())
            bar.update(len(reasons))
    return (torch.cat(chunks) if chunks else None), errors


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

    Returns an (N, D) float32 CPU tensor in the order of ``samples`` (an unreadable file is a
    black image, warned once). ``shard=True`` splits the work over the ranks of the process
    group (every rank must call it; no effect without a process group or with fewer samples than
    ranks).
    """
    world = distributed.get_world_size() if shard else 1
    options = dict(device=device, batch_size=batch_size, workers=workers, desc=desc)
    if world > 1 and len(samples) >= world:
        start, stop = distributed.shard_bounds(len(samples))
        local = extract_features(
            forward,
            list(samples)[start:stop],
            transform,
            progress=progress and distributed.is_main(),
            **options,
        )
        return distributed.all_gather_cat(local)
    features, _ = extract_batches(
        forward, ImageDataset(samples, transform), progress=progress, **options
    )
    if features is None:
        raise ValueError("no samples to extract features from")
    return features
