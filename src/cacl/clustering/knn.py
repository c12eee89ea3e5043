"""Exact (or approximate) k nearest neighbours in O(N·k) memory.

Two engines give the same exact answer:

- ``"torch"``: blocked matrix products over the upper triangle of the symmetric distance matrix
  (:mod:`cacl.clustering.blocked`), on the features' device, CPU or GPU: about half the
  arithmetic of a plain search, memory of one tile plus the ``N x k`` answer, no faiss needed.
- ``"faiss"``: a flat (brute-force) faiss index, CPU or GPU build, when faiss is importable; it is
  also the only engine for the approximate inverted-file index (``approximate=True``) meant for
  millions of images.

``backend="auto"`` takes the torch engine for exact search (faster than faiss' flat index on the
2-core machine measured, thanks to the symmetry, and it runs wherever the features are) and faiss
for approximate search.

Whatever the engine, row ``i`` of the answer starts with ``i`` itself (distance as computed, about
0), the convention of the k-reciprocal encoding (``rank[i][0] == i``), even when duplicates of
``x_i`` tie with it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cacl.clustering.blocked import BlockCallback, blocked_knn
from cacl.errors import CaclError

logger = logging.getLogger(__name__)

Metric = Literal["cosine", "sqeuclidean"]
Backend = Literal["auto", "torch", "faiss"]
FeatureArray = np.ndarray | torch.Tensor


class InvalidFeaturesError(CaclError, ValueError):
    """Feature rows that no distance can be computed from (NaN, infinite, or zero norm)."""


@dataclass(frozen=True)
class NeighborLists:
    """The k nearest neighbours of every row, nearest first.

    Attributes:
        indices: ``(N, k)`` int64, ``indices[i, 0] == i``.
        distances: ``(N, k)`` float32, ``2 - 2<x_i, x_j>`` for ``"cosine"`` (on L2-normalised
            features) or ``||x_i - x_j||^2`` for ``"sqeuclidean"``.
        farthest: ``(N,)`` float32 largest distance of each row over all N points, when asked for.
    """

    indices: np.ndarray
    distances: np.ndarray
    farthest: np.ndarray | None = None


def faiss_available() -> bool:
    """Whether ``import faiss`` works (faiss-cpu or faiss-gpu)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_features(features: FeatureArray, *, normalize: bool) -> torch.Tensor:
    """Return the features as a float32 ``(N, D)`` tensor on their own device, checked.

    Args:
        features: ``(N, D)`` numpy array or torch tensor of any float dtype (float16 and bfloat16
            are computed in float32), on any device.
        normalize: L2-normalise the rows (a new tensor unless they already have unit norm, to
            within 1e-6; the input is never modified).

    Raises:
        InvalidFeaturesError: not 2-D, empty, rows with NaN or infinite values, or (when
            normalising) rows of zero norm. The message says how many rows and the first of them.
    """
    x = torch.as_tensor(features).detach()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidFeaturesError(
            f"features must be a non-empty (N, D) matrix, got shape {tuple(x.shape)}"
        )
    x = x.to(torch.float32)
    # Checked in chunks of rows: a whole-matrix check would allocate a copy as large as x
    # (8 GB of float32 features at N = 10^6, D = 2048).
    step = max(1, (1 << 24) // max(x.shape[1], 1))
    bad = torch.cat(
        [~torch.isfinite(x[a : a + step]).all(dim=1) for a in range(0, x.shape[0], step)]
    )
    if bad.any():
        rows = torch.nonzero(bad).flatten()
        raise InvalidFeaturesError(
            f"{rows.numel()} of {x.shape[0]} feature rows contain NaN or infinite values "
            f"(first: row {int(rows[0])}); check the model output or the memory bank"
        )
    if normalize:
        norms = torch.linalg.vector_norm(x, dim=1)
        zero = norms == 0
        if zero.any():
            rows = torch.nonzero(zero).flatten()
            raise InvalidFeaturesError(
                f"{rows.numel()} of {x.shape[0]} feature rows have zero norm "
                f"(first: row {int(rows[0])}); they cannot be L2-normalised"
            )
        if not bool(((norms - 1.0).abs() <= 1e-6).all()):  # memory rows already are unit
            x = x / norms[:, None]
    return x.contiguous()


def nearest_neighbors(
    features: FeatureArray,
    k: int,
    *,
    metric: Metric = "cosine",
    backend: Backend = "auto",
    approximate: bool = False,
    nlist: int | None = None,
    nprobe: int = 32,
    block_size: int | None = None,
    progress: bool = False,
) -> NeighborLists:
    """The ``k`` nearest neighbours of every row among all rows (itself first).

    Args:
        features: ``(N, D)`` array or tensor; see :func:`prepare_features`.
        k: neighbours per row, the row itself included; clipped to N.
        metric: ``"cosine"`` (features are L2-normalised first; distance ``2 - 2<x_i, x_j>``,
            i.e. squared Euclidean on the normalised features) or ``"sqeuclidean"`` (as given).
        backend: ``"torch"``, ``"faiss"`` or ``"auto"`` (see the module docstring).
        approximate: use a faiss inverted-file index (``IndexIVFFlat``) instead of exact search.
        nlist: inverted lists of the approximate index (default ``4 * sqrt(N)``).
        nprobe: lists visited per query by the approximate index.
        block_size: tile size of the torch engine (default 2048 on CPU, 8192 on GPU).
        progress: show a progress bar.
    """
    x = prepare_features(features, normalize=metric == "cosine")
    return knn_prepared(
        x,
        k,
        metric=metric,
        backend=backend,
        approximate=approximate,
        nlist=nlist,
        nprobe=nprobe,
        block_size=block_size,
        progress=progress,
    )


def knn_prepared(
    x: torch.Tensor,
    k: int,
    *,
    metric: Metric = "cosine",
    backend: Backend = "auto",
    approximate: bool = False,
    nlist: int | None = None,
    nprobe: int = 32,
    block_size: int | None = None,
    farthest: bool = False,
    on_block: BlockCallback | None = None,
    progress: bool = False,
) -> NeighborLists:
    """:func:`nearest_neighbors` on features already checked (and normalised for ``"cosine"``).

    ``farthest`` and ``on_block`` (every computed tile of the distance matrix, for callers that
    need more than the neighbours, such as re-ranking) require the torch engine.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if metric not in ("cosine", "sqeuclidean"):
        raise ValueError(f"unknown metric {metric!r}")
    k = min(k, x.shape[0])
    if backend == "auto":
        backend = "faiss" if approximate else "torch"
    if backend == "faiss":
        if farthest or on_block is not None:
            raise ValueError("farthest distances and tile callbacks need backend='torch'")
        if not faiss_available():
            raise CaclError(
                "faiss is not installed: `pip install faiss-cpu` (or faiss-gpu), "
                "or use backend='torch' for exact search"
            )
        indices, distances = _faiss_knn(x, k, metric, approximate, nlist, nprobe)
        far = None
    elif backend == "torch":
        if approximate:
            raise ValueError("approximate search needs faiss (backend='faiss' or 'auto')")
        block = block_size or (8192 if x.device.type == "cuda" else 2048)
        indices, distances, far = blocked_knn(
            x,
            k,
            squared_norms=metric == "sqeuclidean",
            block=block,
            farthest=farthest,
            on_block=on_block,
            progress=progress,
        )
    else:
        raise ValueError(f"unknown backend {backend!r}")
    indices, distances = _self_first(indices, distances)
    logger.debug("%d nearest neighbours of %d rows (%s, %s)", k, x.shape[0], backend, metric)
    return NeighborLists(indices, distances, far)


def _faiss_knn(
    x: torch.Tensor,
    k: int,
    metric: Metric,
    approximate: bool,
    nlist: int | None,
    nprobe: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Search with a faiss index (on the GPU when the features are there and faiss has GPUs)."""
    import faiss

    xs = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    n, dim = xs.shape
    inner = metric == "cosine"
    faiss_metric = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
    if approximate:
        lists = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        quantizer = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss_metric)
        train = xs if n <= 256 * lists else xs[np.random.default_rng(0).choice(n, 256 * lists)]
        index.train(train)
        index.nprobe = min(nprobe, lists)
    else:
        index = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
    if x.device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, x.device.index or 0, index)
    index.add(xs)
    scores, indices = index.search(xs, k)
    distances = 2.0 - 2.0 * scores if inner else scores
    missing = int((indices < 0).any(axis=1).sum())
    if missing:
        raise CaclError(
            f"the approximate index found fewer than {k} neighbours for {missing} rows: "
            f"raise nprobe (now {nprobe}) or lower nlist"
        )
    return indices.astype(np.int64), distances.astype(np.float32)


def _self_first(indices: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Move each row's own index to column 0 (inserting it, distance 0, when it is missing)."""
    n, k = indices.shape
    own = indices == np.arange(n)[:, None]
    if own[:, 0].all() and own.sum() == n:
        return indices, distances
    # Stable sort of the columns by "is not i": i comes first, the others keep their order;
    # a row without i gets it inserted in front, its last neighbour dropped.
    has_own = own.any(axis=1)
    order = np.argsort(~own, axis=1, kind="stable")
    idx = np.take_along_axis(indices, order, axis=1)
    dist = np.take_along_axis(distances, order, axis=1)
    lacking = ~has_own
    if lacking.any():
        idx[lacking, 1:] = idx[lacking, :-1]
        dist[lacking, 1:] = dist[lacking, :-1]
        idx[lacking, 0] = np.flatnonzero(lacking)
        dist[lacking, 0] = 0.0
    return idx, dist
