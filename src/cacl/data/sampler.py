"""Identity sampler: batches of P pseudo identities x K images, the K from different cameras
where the class allows it (docs/method.md, "Training schedule").

The sampler is reproducible from its seed and epoch (:meth:`set_epoch`), and yields exactly
``iters * batch_size`` indexes per epoch so an epoch is a fixed number of steps.

Distributed training: every rank builds the same global stream (same seed and epoch) and keeps its
slice of each global batch of ``batch_size``: rank r takes positions ``[r * b, (r + 1) * b)`` with
``b = batch_size / world_size``. The global batch is therefore the one a single process would draw,
and gathering the ranks' slices in rank order gives it back in order. When ``b`` is a multiple of
K and the classes have K images or more, each slice holds whole K-groups.

:class:`SeededViews` draws each training item's random augmentations from a seed of its own (the
seed, the epoch and its position in the global stream), so the views do not depend on the number
of ranks or data-loader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class CameraAwareIdentitySampler(Sampler):
    """Yield ``iters * batch_size`` indexes: classes in random order, K images each.

    The stream is cut into batches of ``batch_size`` by the DataLoader, so a batch holds P classes
    of K images when every class has K or more images; singleton and small classes make room for
    more classes in the same batch.

    Args:
        labels: the training class of every sample (-1 = not trained on).
        camids: the camera of every sample.
        batch_size: B = P * K.
        num_instances: K. A class with fewer than K images gives all it has (a singleton class
            gives one image); a class with more gives K images from as many different cameras as
            it has, drawn at random.
        iters: batches per epoch.
        seed: base seed; the epoch is mixed in so every epoch differs and is reproducible.
        rank, world_size: this process's slice of every global batch (see the module docstring);
            it yields ``iters * batch_size / world_size`` indexes.
        positions: yield ``(index, position in the global stream)`` pairs, for
            :class:`SeededViews`, instead of indexes.
    """

    def __init__(
        self,
        labels: np.ndarray,
        camids: np.ndarray,
        batch_size: int,
        num_instances: int,
        iters: int,
        seed: int = 0,
        *,
        rank: int = 0,
        world_size: int = 1,
        positions: bool = False,
    ) -> None:
        labels, camids = np.asarray(labels), np.asarray(camids)
        if labels.shape != camids.shape:
            raise ValueError("labels and camids must have the same length")
        if batch_size % num_instances:
            raise ValueError("batch_size must be a multiple of num_instances")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size}")
        if batch_size % world_size:
            raise ValueError(
                f"batch_size ({batch_size}) must be a multiple of the number of processes "
                f"({world_size})"
            )
        self.batch_size, self.num_instances, self.iters = batch_size, num_instances, iters
        self.rank, self.world_size, self.positions = rank, world_size, positions
        self.local_batch_size = batch_size // world_size
        self.seed, self.epoch = seed, 0
        valid = np.flatnonzero(labels >= 0)
        if valid.size == 0:
            raise ValueError("no sample has a training label")
        order = valid[np.argsort(labels[valid], kind="stable")]
        classes, starts = np.unique(labels[order], return_index=True)
        self.members = np.split(order, starts[1:])
        self.member_cams = [camids[m] for m in self.members]
        self.num_classes = len(classes)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.iters * self.local_batch_size

    def _draw(self, rng: np.random.Generator, cls: int) -> np.ndarray:
        members, cams = self.members[cls], self.member_cams[cls]
        k = self.num_instances
        if len(members) <= k:
            return rng.permutation(members)
        # Round-robin over cameras in random order: one image per camera before any repeats.
        perm = rng.permutation(len(members))
        members, cams = members[perm], cams[perm]
        rank_in_cam = np.empty(len(members), dtype=np.int64)
        for cam in np.unique(cams):
            positions = np.flatnonzero(cams == cam)
            rank_in_cam[positions] = np.arange(len(positions))
        # Sort by (rank within camera, random tie-break): first picks cover distinct cameras.
        picks = np.lexsort((rng.random(len(members)), rank_in_cam))[:k]
        return members[picks]

    def global_stream(self) -> Iterator[int]:
        """The ``iters * batch_size`` indexes of the epoch, for all ranks together."""
        rng = np.random.default_rng([self.seed, self.epoch])
        remaining = self.iters * self.batch_size
        while remaining > 0:
            for cls in rng.permutation(self.num_classes):
                for index in self._draw(rng, int(cls))[:remaining]:
                    yield int(index)
                    remaining -= 1
                if remaining == 0:
                    return

    def __iter__(self) -> Iterator[Any]:
        start = self.rank * self.local_batch_size
        stop = start + self.local_batch_size
        for position, index in enumerate(self.global_stream()):
            if start <= position % self.batch_size < stop:
                yield (index, position) if self.positions else index


def view_seed(seed: int, epoch: int, position: int) -> int:
    """The torch seed of the training item at ``position`` of epoch ``epoch``'s global stream."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1, np.uint64)[0])


class SeededViews(Dataset):
    """Wrap a training dataset whose sampler yields ``(index, position)`` pairs: item ``index`` is
    made under the torch seed :func:`view_seed` ``(seed, epoch, position)``, so its random views
    are the same whichever process or worker makes it. The global torch RNG is left untouched."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, position = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(view_seed(self.seed, self.epoch, position))
            return self.dataset[index]
