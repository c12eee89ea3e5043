"""Exact (or approximate) k nearest neighbours in O(N·k) memory.

Two engines give the same exact answer:

- ``"torch"``: blocked matrix products over the upper triangle of the symmetric distance matrix
  (:mod:`cacl.clustering.blocked`), on the features' device, CPU or GPU: about half the
  arithmetic of a plain search, memory of one tile plus the ``N x k`` answer, no faiss needed.
- ``"faiss"``: a flat (brute-force) faiss index, CPU or GPU build, when faiss is importable.

``backend="auto"`` takes the torch engine (faster than faiss' flat index on the 2-core machine
measured, thanks to the symmetry, and it runs wherever the features are).

``approximate=True`` is the search meant for 10^5 - 10^7 rows (:mod:`cacl.clustering.approximate`):
candidates from a PCA projection, every distance exact; it needs faiss from
``ApproximateOptions.exact_below`` rows on.

Whatever the engine, row ``i`` of the answer starts with ``i`` itself (distance as computed, about
0), the convention of the k-reciprocal encoding (``rank[i][0] == i``), even when duplicates of
``x_i`` tie with it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from cacl.clustering.approximate import (
    ApproximateOptions,
    candidate_count,
    coarse_order,
    exact_rerank,
    fit_projection,
    project,
    projected_candidates,
)
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
    converted = x.dtype != torch.float32
    x = x.to(torch.float32)  # a copy only for other dtypes: then ours to normalise in place
    # Checked and normalised in chunks of rows: a whole-matrix operation would allocate a copy as
    # large as x (8 GB of float32 features at N = 10^6, D = 2048).
    step = max(1, (1 << 24) // max(x.shape[1], 1))
    chunks = [(a, min(a + step, x.shape[0])) for a in range(0, x.shape[0], step)]
    bad = torch.cat([~torch.isfinite(x[a:b]).all(dim=1) for a, b in chunks])
    if bad.any():
        rows = torch.nonzero(bad).flatten()
        raise InvalidFeaturesError(
            f"{rows.numel()} of {x.shape[0]} feature rows contain NaN or infinite values "
            f"(first: row {int(rows[0])}); check the model output or the memory bank"
        )
    if normalize:
        norms = torch.cat([torch.linalg.vector_norm(x[a:b], dim=1) for a, b in chunks])
        zero = norms == 0
        if zero.any():
            rows = torch.nonzero(zero).flatten()
            raise InvalidFeaturesError(
                f"{rows.numel()} of {x.shape[0]} feature rows have zero norm "
                f"(first: row {int(rows[0])}); they cannot be L2-normalised"
            )
        # memory rows already are unit; float16 ones only to about 1e-3
        if not bool(((norms - 1.0).abs() <= 1e-6).all()):
            out = x if converted else torch.empty_like(x)
            for a, b in chunks:
                torch.div(x[a:b], norms[a:b, None], out=out[a:b])
            x = out
    return x.contiguous()


def nearest_neighbors(
    features: FeatureArray,
    k: int,
    *,
    metric: Metric = "cosine",
    backend: Backend = "auto",
    approximate: bool = False,
    options: ApproximateOptions | None = None,
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
        approximate: candidates from a PCA projection re-ranked by exact distances
            (:mod:`cacl.clustering.approximate`) instead of an exact search.
        options: settings of the approximate search (default :class:`ApproximateOptions`).
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
        options=options,
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
    options: ApproximateOptions | None = None,
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
    if approximate:
        if farthest or on_block is not None:
            raise ValueError("farthest distances and tile callbacks need the exact search")
        if metric != "cosine":
            raise ValueError("the approximate search is for the cosine metric (unit rows)")
        indices, distances = approximate_knn(x, k, options or ApproximateOptions(), progress)
        indices, distances = _self_first(indices, distances)
        logger.debug("%d approximate nearest neighbours of %d rows", k, x.shape[0])
        return NeighborLists(indices, distances)
    if backend == "auto":
        backend = "torch"
    if backend == "faiss":
        if farthest or on_block is not None:
            raise ValueError("farthest distances and tile callbacks need backend='torch'")
        if not faiss_available():
            raise CaclError(
                "faiss is not installed: `pip install faiss-cpu` (or faiss-gpu), "
                "or use backend='torch' for exact search"
            )
        indices, distances = _faiss_knn(x, k, metric)
        far = None
    elif backend == "torch":
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


def _faiss_knn(x: torch.Tensor, k: int, metric: Metric) -> tuple[np.ndarray, np.ndarray]:
    """Exact search with a flat faiss index (on the GPU when the features are there and faiss has
    GPUs)."""
    import faiss

    xs = np.ascontiguousarray(x.cpu().numpy(), dtype=np.float32)
    dim = xs.shape[1]
    inner = metric == "cosine"
    index = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
    if x.device.type == "cuda" and hasattr(faiss, "StandardGpuResources"):
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, x.device.index or 0, index)
    index.add(xs)
    scores, indices = index.search(xs, k)
    distances = 2.0 - 2.0 * scores if inner else scores
    return indices.astype(np.int64), distances.astype(np.float32)


def approximate_knn(
    x: torch.Tensor, k: int, options: ApproximateOptions, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, distances)`` of the approximate search (unit rows ``x``, cosine distance):
    candidates in a PCA projection, exact re-ranking; rows left with fewer than ``k`` candidates
    (rare) are searched exactly."""
    n = x.shape[0]
    if n >= options.exact_below and not faiss_available():
        raise CaclError(
            f"the approximate kNN of {n} rows needs faiss: `pip install faiss-cpu`, "
            "or cluster.knn=exact"
        )
    mean, basis = fit_projection(x, options.dim, sample=options.sample, seed=options.seed)
    y = project(x, mean, basis)
    candidates = projected_candidates(y, candidate_count(k, options, n), options, progress=progress)
    order = coarse_order(y, seed=options.seed)
    del y
    indices, distances = exact_rerank(x, candidates, k, order=order, progress=progress)
    short = np.flatnonzero((indices < 0).any(axis=1))
    if short.size:
        logger.info("approximate kNN: %d rows with too few candidates searched exactly", short.size)
        for a in range(0, short.size, 256):
            rows = torch.as_tensor(short[a : a + 256], device=x.device)
            sims = x[rows].float() @ x.float().T
            best, found = torch.topk(sims, k, dim=1)
            indices[short[a : a + 256]] = found.cpu().numpy()
            distances[short[a : a + 256]] = (2.0 - 2.0 * best).clamp_min(0.0).cpu().numpy()
    return indices, distances


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
