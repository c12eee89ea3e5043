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

The rows may be stored in float16 (``memory.dtype``): half the memory of float32, 4 GB instead of 8
for 10^6 rows of D = 2048. Whatever the storage, the arithmetic is float32: updates are computed in
float32 and then stored, centroids and proxies are float32 sums of the stored rows. Every pass over
the whole bank (normalisation, centroids, proxies) goes through it in chunks of rows, so none
allocates a second bank-sized tensor; :meth:`InstanceMemory.from_storage` and
:meth:`InstanceMemory.empty` build a bank in storage allocated once (loading a checkpoint copies
the saved rows once).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: The storage types of the rows, by their ``memory.dtype`` names.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
#: Values per chunk of rows in the passes over the whole bank: 2^23 float32 values, 32 MB (4,096
#: rows of 2,048). Fewer, larger chunks cost fewer parallel regions (measured on a loaded 2-core CPU:
#: index_add_ over 10^5 rows in 2,048-row chunks 4.3 s, 8,192-row chunks 1.5 s, at once 0.6 s).
CHUNK_ELEMENTS = 1 << 23


def memory_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """The storage type of a bank from its name (``float32``, ``float16``, ``bfloat16``) or a
    torch dtype; a ``ValueError`` that lists them for anything else."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ValueError(f"memory dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")


class InstanceMemory:
    """An ``N x D`` bank of normalised features plus the centroids of the current labels.

    Args:
        features: initial rows (N, D); normalised on the way in (copied, chunk by chunk, into
            storage of ``dtype``).
        alpha: the update rule's ``alpha`` (0.2 in the paper): the weight of the old row.
        dtype: storage type of the rows (:data:`DTYPES`); centroids and proxies are float32.

    :meth:`empty` + :meth:`write_rows`, or :meth:`from_storage`, build a bank without the copy.
    After :meth:`set_cameras` the bank also keeps camera proxies (``proxies``, ``proxy_class``,
    ``proxy_camera``, ``proxy_index``).
    """

    def __init__(
        self, features: torch.Tensor, alpha: float = 0.2, *, dtype: torch.dtype = torch.float32
    ) -> None:
        features = torch.as_tensor(features).detach()
        _check_rows(features)
        storage = torch.empty(features.shape, dtype=memory_dtype(dtype), device=features.device)
        self._setup(storage, alpha)
        self.write_rows(0, features)

    def _setup(self, storage: torch.Tensor, alpha: float) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.features = storage
        self.labels: torch.Tensor | None = None
        self.centroids: torch.Tensor | None = None
        self._counts: torch.Tensor | None = None
        self.cameras: torch.Tensor | None = None
        self.proxies: torch.Tensor | None = None  # (P, D) means of (class, camera) pairs
        self.proxy_class: torch.Tensor | None = None  # (P,) class of each proxy
        self.proxy_camera: torch.Tensor | None = None  # (P,) camera of each proxy
        self.proxy_index: torch.Tensor | None = None  # (N,) proxy of each row, -1 for no class
        self._proxy_counts: torch.Tensor | None = None

    @classmethod
    def empty(
        cls,
        n: int,
        dim: int,
        alpha: float = 0.2,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> InstanceMemory:
        """A bank of ``n`` rows of ``dim`` whose storage is allocated but not written: fill every
        row with :meth:`write_rows` before anything else."""
        if n < 1 or dim < 1:
            raise ValueError(f"a memory needs at least one row and one column, got ({n}, {dim})")
        memory = cls.__new__(cls)
        memory._setup(torch.empty(n, dim, dtype=memory_dtype(dtype), device=device), alpha)
        return memory

    @classmethod
    def from_storage(cls, storage: torch.Tensor, alpha: float = 0.2) -> InstanceMemory:
        """A bank whose rows are ``storage`` itself, no copy: its rows are L2-normalised in place
        (chunk by chunk, in float32) and it becomes the bank; its dtype is the bank's."""
        storage = storage.detach()
        _check_rows(storage)
        memory_dtype(storage.dtype)
        memory = cls.__new__(cls)
        memory._setup(storage, alpha)
        for a, b in memory._chunks():
            rows = storage[a:b]
            rows.copy_(F.normalize(rows.float(), dim=1))
        return memory

    @property
    def num_samples(self) -> int:
        return self.features.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        """Storage type of the rows."""
        return self.features.dtype

    @property
    def device(self) -> torch.device:
        return self.features.device

    def _chunks(self) -> list[tuple[int, int]]:
        """``(start, stop)`` row ranges of about :data:`CHUNK_ELEMENTS` values each."""
        step = max(1, CHUNK_ELEMENTS // max(self.features.shape[1], 1))
        n = self.num_samples
        return [(a, min(a + step, n)) for a in range(0, n, step)]

    def write_rows(self, start: int, rows: torch.Tensor) -> None:
        """Write ``rows`` (B, D), L2-normalised in float32, at rows ``start .. start + B - 1``.

        For filling a bank (:meth:`empty`) before its labels are set: centroids would not follow.
        """
        rows = torch.as_tensor(rows).detach()
        d = self.features.shape[1]
        if rows.dim() != 2 or rows.shape[1] != d:
            raise ValueError(f"rows must be (B, {d}), got {tuple(rows.shape)}")
        if start < 0 or start + rows.shape[0] > self.num_samples:
            raise ValueError(
                f"rows {start}..{start + rows.shape[0] - 1} lie outside the bank's "
                f"{self.num_samples} rows"
            )
        if self.labels is not None:
            raise ValueError("write_rows fills a bank before set_labels; use update afterwards")
        step = max(1, CHUNK_ELEMENTS // max(d, 1))
        for a in range(0, rows.shape[0], step):
            chunk = rows[a : a + step].to(self.device, torch.float32)
            self.features[start + a : start + a + chunk.shape[0]] = F.normalize(chunk, dim=1)

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
        contributes to no centroid). O(N * D) time, memory of the centroids plus a chunk of rows.
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
        # the old centroids and proxies go first: never two sets alive at once
        self.centroids = self._counts = self.proxies = self._proxy_counts = None
        self.labels = labels
        self._counts = torch.bincount(labels[assigned], minlength=num_classes).float()
        sums = self._sums(labels, num_classes)
        self.centroids = sums.div_(self._counts.clamp_min(1).unsqueeze(1))
        if self.cameras is not None:
            self._set_proxies(labels, assigned)

    def _set_proxies(self, labels: torch.Tensor, assigned: torch.Tensor) -> None:
        """One proxy per (class, camera) pair present, ordered by class then camera."""
        assert self.cameras is not None
        self.proxies = self._proxy_counts = None
        num_cameras = int(self.cameras.max()) + 1
        key = labels[assigned] * num_cameras + self.cameras[assigned]
        pairs, inverse = torch.unique(key, return_inverse=True)
        del key
        self.proxy_class = pairs // num_cameras
        self.proxy_camera = pairs % num_cameras
        self.proxy_index = torch.full_like(labels, -1)
        self.proxy_index[assigned] = inverse
        self._proxy_counts = torch.bincount(inverse, minlength=pairs.numel()).float()
        sums = self._sums(self.proxy_index, pairs.numel())
        self.proxies = sums.div_(self._proxy_counts.unsqueeze(1))

    def _sums(self, index: torch.Tensor, size: int) -> torch.Tensor:
        """``(size, D)`` float32 sums of the rows by ``index`` (N,), -1 = no sum: the rows in
        chunks, each converted to float32 on its own, in row order."""
        sums = torch.zeros(size, self.features.shape[1], device=self.device)
        for a, b in self._chunks():
            idx, rows = index[a:b], self.features[a:b]
            keep = idx >= 0
            if not bool(keep.all()):
                idx, rows = idx[keep], rows[keep]
            sums.index_add_(0, idx, rows.float())
        return sums

    @torch.no_grad()
    def update(self, indexes: torch.Tensor, features: torch.Tensor) -> None:
        """Apply the update rule to rows ``indexes`` with new ``features`` (B, D).

        An index that occurs several times in a batch is updated once per occurrence, in batch
        order, exactly as a sequential loop would; the work is vectorised per occurrence round
        (one round unless the batch holds duplicates). Computed in float32, stored in the bank's
        dtype; centroids and proxies move by the change of the stored rows.
        """
        indexes = torch.as_tensor(indexes, dtype=torch.long, device=self.device)
        features = features.detach().to(self.device, torch.float32)
        if indexes.dim() != 1 or features.shape != (indexes.shape[0], self.features.shape[1]):
            raise ValueError(
                f"update needs indexes (B,) and features (B, {self.features.shape[1]}); got "
                f"{tuple(indexes.shape)} and {tuple(features.shape)}"
            )
        for rows in _occurrence_rounds(indexes):
            idx = indexes[rows]
            old = self.features[idx].float()
            new = F.normalize(self.alpha * old + (1.0 - self.alpha) * features[rows], dim=1)
            stored = new.to(self.features.dtype)
            self.features[idx] = stored
            new = stored.float()  # what the bank now holds (new itself in float32)
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
        """Rows (in their dtype), labels and alpha; centroids and proxies are recomputed on load."""
        return {"features": self.features, "labels": self.labels, "alpha": self.alpha}

    @classmethod
    def from_state_dict(
        cls,
        state: dict,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> InstanceMemory:
        """A bank rebuilt from :meth:`state_dict` (rows, labels, centroids) on ``device``, its
        rows in ``dtype`` (None: the dtype they were saved in)."""
        memory = cls.__new__(cls)
        memory._setup(torch.zeros(1, 1, device=device), _alpha(state))
        memory.load_state_dict(state, dtype)
        return memory

    def load_state_dict(self, state: dict, dtype: torch.dtype | None = None) -> None:
        """Take the rows (a copy, in ``dtype``; None: the saved dtype), labels and alpha of
        ``state`` and recompute the centroids (and proxies when the bank has cameras)."""
        saved, device = state["features"], self.device
        _check_rows(saved)
        dtype = memory_dtype(saved.dtype if dtype is None else dtype)
        self.alpha = _alpha(state)
        self.labels = self.centroids = self._counts = None
        self.proxies = self.proxy_class = self.proxy_camera = self.proxy_index = None
        self._proxy_counts = None
        del self.features  # the old rows go before the copy is made
        self.features = saved.to(device, dtype, copy=True)
        if state.get("labels") is not None:
            self.set_labels(state["labels"])


def _check_rows(features: torch.Tensor) -> None:
    if features.dim() != 2:
        raise ValueError(f"memory features must be (N, D), got {tuple(features.shape)}")


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
