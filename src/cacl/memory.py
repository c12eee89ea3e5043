"""Instance memory bank with class centroids kept up to date incrementally (docs/method.md, "Instance
memory banks").

The bank holds one L2-normalised row ``v_i`` per training image. After each optimiser step the rows
of the batch move towards the new features, ``v_i <- normalise(alpha * v_i + (1 - alpha) * x_i)``,
explicitly and without gradient. Class centroids ``u_l = mean{v_k : y_k = l}`` are maintained by
adding each row's change divided by its class size, so an update costs O(B * D) instead of the
O(N * D) of recomputing every centroid.

Given the camera of every row, the bank also keeps camera proxies (docs/method.md, "Beyond the paper"):
the mean row of each (class, camera) pair, recomputed with the labels and moved by the same
incremental rule at every update, so within an epoch they always equal the means of the current
rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class InstanceMemory:
    """An ``N x D`` bank of normalised features plus the centroids of the current labels.

    Args:
        features: initial rows (N, D); normalised on the way in.
        alpha: the update rule's ``alpha`` (0.2 in the paper): the weight of the old row.

    After :meth:`set_cameras` the bank also keeps camera proxies (``proxies``, ``proxy_class``,
    ``proxy_camera``, ``proxy_index``).
    """

    def __init__(self, features: torch.Tensor, alpha: float = 0.2) -> None:
        if features.dim() != 2:
            raise ValueError(f"memory features must be (N, D), got {tuple(features.shape)}")
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.features = F.normalize(features.detach().float(), dim=1).clone()
        self.labels: torch.Tensor | None = None
        self.centroids: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self.cameras: torch.Tensor | None = None
        self.proxies: torch.Tensor | None = None  # (P, D) means of (class, camera) pairs
        self.proxy_class: torch.Tensor | None = None  # (P,) class of each proxy
        self.proxy_camera: torch.Tensor | None = None  # (P,) camera of each proxy
        self.proxy_index: torch.Tensor | None = None  # (N,) proxy of each row, -1 for no class
        self._proxy_counts: torch.Tensor | None = None

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]

    @property
    def device(self) -> torch.device:
        return self.features.device

    def to(self, device: torch.device | str) -> InstanceMemory:
        self.features = self.features.to(device)
        if self.cameras is not None:
            self.cameras = self.cameras.to(device)
        if self.labels is not None:
            self.set_labels(self.labels.to(device))
        return self

    def set_cameras(self, cameras: torch.Tensor) -> None:
        """Give the camera id (>= 0) of every row: from now on the bank keeps camera proxies."""
        cameras = torch.as_tensor(cameras, dtype=torch.long, device=self.device)
        if cameras.shape != (self.num_samples,):
            raise ValueError(f"cameras must be ({self.num_samples},), got {tuple(cameras.shape)}")
        if int(cameras.min()) < 0:
            raise ValueError("camera ids must be >= 0")
        self.cameras = cameras
        if self.labels is not None:
            self._set_proxies(self.labels, self.labels >= 0)

    def set_labels(self, labels: torch.Tensor) -> None:
        """Set the class of every row and recompute the centroids.

        Classes are 0..C-1; a row labelled -1 belongs to no class (it is kept and updated but
        contributes to no centroid).
        """
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        if labels.shape != (self.num_samples,):
            raise ValueError(f"labels must be ({self.num_samples},), got {tuple(labels.shape)}")
        if int(labels.min()) < -1:
            raise ValueError("labels must be class indices >= 0, or -1 for no class")
        assigned = labels >= 0
        if not bool(assigned.any()):
            raise ValueError("no row has a class: cannot compute centroids")
        num_classes = int(labels.max()) + 1
        self.labels = labels
        self._counts = torch.bincount(labels[assigned], minlength=num_classes).float()
        sums = torch.zeros(num_classes, self.features.shape[1], device=self.device)
        sums.index_add_(0, labels[assigned], self.features[assigned])
        self.centroids = sums / self._counts.clamp_min(1).unsqueeze(1)
        if self.cameras is not None:
            self._set_proxies(labels, assigned)

    def _set_proxies(self, labels: torch.Tensor, assigned: torch.Tensor) -> None:
        """One proxy per (class, camera) pair present, ordered by class then camera."""
        assert self.cameras is not None
        num_cameras = int(self.cameras.max()) + 1
        key = labels[assigned] * num_cameras + self.cameras[assigned]
        pairs, inverse = torch.unique(key, return_inverse=True)
        self.proxy_class = pairs // num_cameras
        self.proxy_camera = pairs % num_cameras
        self.proxy_index = torch.full_like(labels, -1)
        self.proxy_index[assigned] = inverse
        self._proxy_counts = torch.bincount(inverse, minlength=pairs.numel()).float()
        sums = torch.zeros(pairs.numel(), self.features.shape[1], device=self.device)
        sums.index_add_(0, inverse, self.features[assigned])
        self.proxies = sums / self._proxy_counts.unsqueeze(1)

    @torch.no_grad()
    def update(self, indexes: torch.Tensor, features: torch.Tensor) -> None:
        """Apply the update rule to rows ``indexes`` with new ``features`` (B, D).

        An index that occurs several times in a batch is updated once per occurrence, in batch
        order, exactly as a sequential loop would; the work is vectorised per occurrence round
        (one round unless the batch holds duplicates).
        """
        indexes = torch.as_tensor(indexes, dtype=torch.long, device=self.device)
        features = features.detach().to(self.device, self.features.dtype)
        if indexes.dim() != 1 or features.shape != (indexes.shape[0], self.features.shape[1]):
            raise ValueError(
                f"update needs indexes (B,) and features (B, {self.features.shape[1]}); got "
                f"{tuple(indexes.shape)} and {tuple(features.shape)}"
            )
        for rows in _occurrence_rounds(indexes):
            idx = indexes[rows]
            old = self.features[idx]
            new = F.normalize(self.alpha * old + (1.0 - self.alpha) * features[rows], dim=1)
            self.features[idx] = new
            if self.centroids is not None:
                assert self.labels is not None and self._counts is not None
                cls = self.labels[idx]
                keep = cls >= 0
                delta = (new[keep] - old[keep]) / self._counts[cls[keep]].unsqueeze(1)
                self.centroids.index_add_(0, cls[keep], delta)
            if self.proxies is not None:
                assert self.proxy_index is not None and self._proxy_counts is not None
                pid = self.proxy_index[idx]
                keep = pid >= 0
                delta = (new[keep] - old[keep]) / self._proxy_counts[pid[keep]].unsqueeze(1)
                self.proxies.index_add_(0, pid[keep], delta)

    def state_dict(self) -> dict[str, torch.Tensor | float | None]:
        return {"features": self.features, "labels": self.labels, "alpha": self.alpha}

    @classmethod
    def from_state_dict(cls, state: dict, device: torch.device | str = "cpu") -> InstanceMemory:
        """A bank rebuilt from :meth:`state_dict` (rows, labels, centroids) on ``device``."""
        memory = cls(torch.zeros(1, 1), _alpha(state))
        memory.load_state_dict(state)
        return memory.to(device)

    def load_state_dict(self, state: dict) -> None:
        self.alpha = _alpha(state)
        self.features = state["features"].to(self.device, torch.float32).clone()
        self.labels = self.centroids = self._counts = None
        self.proxies = self.proxy_class = self.proxy_camera = self.proxy_index = None
        if state.get("labels") is not None:
            self.set_labels(state["labels"])


def _occurrence_rounds(indexes: torch.Tensor) -> list[torch.Tensor]:
    """Split batch positions into rounds: round r holds the (r+1)-th occurrence of each index."""
    if indexes.numel() == 0:
        return []
    order = torch.argsort(indexes, stable=True)
    sorted_idx = indexes[order]
    starts = torch.ones_like(sorted_idx, dtype=torch.bool)
    starts[1:] = sorted_idx[1:] != sorted_idx[:-1]
    if bool(starts.all()):
        return [torch.arange(indexes.numel(), device=indexes.device)]
    # Occurrence number of each sorted position = position - start of its run.
    positions = torch.arange(sorted_idx.numel(), device=indexes.device)
    run_start = torch.cummax(torch.where(starts, positions, torch.zeros_like(positions)), 0).values
    occurrence = torch.empty_like(positions)
    occurrence[order] = positions - run_start
    return [
        torch.nonzero(occurrence == r, as_tuple=True)[0] for r in range(int(occurrence.max()) + 1)
    ]


def _alpha(state: dict) -> float:
    """The update's alpha from a state dict (saved as ``momentum`` before the rename)."""
    return float(state["alpha"] if "alpha" in state else state["momentum"])
