"""Identity sampler: batches of P pseudo identities x K images, the K from different cameras
where the class allows it (METHOD.md, "Training schedule").

The sampler is reproducible from its seed and epoch (:meth:`set_epoch`), and yields exactly
``iters * batch_size`` indexes per epoch so an epoch is a fixed number of steps.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


class CameraAwareIdentitySampler(Sampler[int]):
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
    """

    def __init__(
        self,
        labels: np.ndarray,
        camids: np.ndarray,
        batch_size: int,
        num_instances: int,
        iters: int,
        seed: int = 0,
    ) -> None:
        labels, camids = np.asarray(labels), np.asarray(camids)
        if labels.shape != camids.shape:
            raise ValueError("labels and camids must have the same length")
        if batch_size % num_instances:
            raise ValueError("batch_size must be a multiple of num_instances")
        self.batch_size, self.num_instances, self.iters = batch_size, num_instances, iters
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
        return self.iters * self.batch_size

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

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        remaining = len(self)
        while remaining > 0:
            for cls in rng.permutation(self.num_classes):
                for index in self._draw(rng, int(cls))[:remaining]:
                    yield int(index)
                    remaining -= 1
                if remaining == 0:
                    return
