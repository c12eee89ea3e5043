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
from cacl.cores import loader_workers
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
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, list[tuple[int, str]]]:
    """Run ``forward`` over a dataset of ``(tensor, index, reason)`` items, in order.

    Returns the float32 CPU features of the items read (None when there are none) and
    ``(index, reason)`` for the others (see :class:`~cacl.data.image_dataset.ImageDataset`);
    with ``stop_on_error`` it stops at the first batch that holds one.

    ``out``: preallocated ``(len(dataset), D)`` storage (any float dtype and device) that the
    features are written into, batch after batch, converted to its dtype: the features returned
    are then ``out`` (its first rows when items were not read), and no list of batches is kept.
    """
    device = torch.device(device)
    if out is not None and (out.dim() != 2 or out.shape[0] < len(dataset)):
        raise ValueError(
            f"out must be ({len(dataset)}, D) for {len(dataset)} items, got {tuple(out.shape)}"
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=loader_workers(workers, device) if len(dataset) > batch_size else 0,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    chunks: list[torch.Tensor] = []
    errors: list[tuple[int, str]] = []
    filled = 0  # rows of out written
    with tqdm(total=len(dataset), desc=desc, unit="img", leave=False, disable=not progress) as bar:
        for images, indices, reasons in loader:
            ok = torch.tensor([not r for r in reasons], dtype=torch.bool)
            errors += [(int(i), r) for i, r in zip(indices, reasons, strict=True) if r]
            if errors and stop_on_error:
                break
            if not ok.all():
                images = images[ok]
            if len(images):
                features = forward(images.to(device, non_blocking=True))
                if out is None:
                    chunks.append(features.float().cpu())
                else:
                    _write(out, filled, features)
                    filled += len(features)
            bar.update(len(reasons))
    if out is not None:
        return (out[:filled] if filled else None), errors
    return (torch.cat(chunks) if chunks else None), errors


def _write(out: torch.Tensor, start: int, features: torch.Tensor) -> None:
    if features.dim() != 2 or features.shape[1] != out.shape[1]:
        raise ValueError(
            f"out holds rows of {out.shape[1]} values; the forward gave {tuple(features.shape)}"
        )
    out[start : start + len(features)].copy_(features.detach())


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
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``forward`` (a module in eval mode, or a function of a batch) over every sample.

    Returns an (N, D) float32 CPU tensor in the order of ``samples`` (an unreadable file is a
    black image, warned once). ``shard=True`` splits the work over the ranks of the process
    group (every rank must call it; no effect without a process group or with fewer samples than
    ranks). ``out``: a preallocated (N, D) tensor of any float dtype to write the features into
    (then returned) instead of a new float32 tensor.
    """
    if out is not None and tuple(out.shape[:1]) != (len(samples),):
        raise ValueError(f"out must hold {len(samples)} rows, got shape {tuple(out.shape)}")
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
        features = distributed.all_gather_cat(local)
        return features if out is None else out.copy_(features)
    features, _ = extract_batches(
        forward, ImageDataset(samples, transform), progress=progress, out=out, **options
    )
    if features is None:
        raise ValueError("no samples to extract features from")
    return features
