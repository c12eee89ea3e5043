"""Sparse Jaccard distance of k-reciprocal encodings, never an N x N dense array.

``d_J(i, j) = 1 - s / (2 - s)`` with ``s = sum_k min(V[i, k], V[j, k])`` (clamped below at 0).
Only pairs that share a column of ``V`` have ``s > 0``; every other pair is at distance exactly 1
and is not stored. The overlaps ``s`` come from :mod:`cacl.clustering.overlap` chunk by chunk;
since ``d_J`` is symmetric, only pairs ``j >= i`` are formed and the lower triangle is mirrored.
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from cacl.clustering.approximate import ApproximateOptions
from cacl.clustering.encoding import PairDistance, k_reciprocal_encoding
from cacl.clustering.knn import (
    Backend,
    FeatureArray,
    NeighborLists,
    knn_prepared,
    prepare_features,
)
from cacl.clustering.overlap import ColumnIndex, map_chunks

logger = logging.getLogger(__name__)


def jaccard_distance(
    features: FeatureArray,
    k1: int = 30,
    k2: int = 6,
    *,
    backend: Backend = "auto",
    approximate: bool = False,
    options: ApproximateOptions | None = None,
    block_size: int | None = None,
    max_distance: float | None = None,
    progress: bool = False,
) -> sp.csr_matrix:
    """k-reciprocal Jaccard distance of the rows of ``features`` (docs/method.md, "Pseudo labels").

    The features are L2-normalised first (the memory rows already are), so neighbours are ranked by
    Euclidean distance on the unit sphere and the encoding weights use ``d = 2 - 2<x_i, x_j>``.

    Args:
        features: ``(N, D)`` numpy array or torch tensor, any float dtype, any device.
        k1: k-reciprocal neighbourhood size; ``rank[i]`` holds the ``k1`` nearest, ``i`` first.
        k2: local query expansion size.
        backend, approximate, options, block_size: the neighbour search, see
            :func:`cacl.clustering.knn.nearest_neighbors`.
        max_distance: store only the distances ``<= max_distance`` (default: every distance below
            1), e.g. ``eps`` when only DBSCAN neighbourhoods are needed: far less memory.
        progress: show progress bars.

    Returns:
        ``N x N`` float32 CSR matrix with sorted indices: the distances below 1, the zero diagonal
        stored explicitly (as are other zeros, e.g. between duplicates); missing entries mean 1.

    Raises:
        InvalidFeaturesError: NaN, infinite or zero-norm rows.
    """
    x = prepare_features(features, normalize=True)
    neighbors = knn_prepared(
        x,
        k1,
        metric="cosine",
        backend=backend,
        approximate=approximate,
        options=options,
        block_size=block_size,
        progress=progress,
    )
    return jaccard_from_neighbors(
        x, neighbors, k1, k2, max_distance=max_distance, progress=progress
    )


def jaccard_from_neighbors(
    x: torch.Tensor,
    neighbors: NeighborLists,
    k1: int,
    k2: int,
    *,
    max_distance: float | None = None,
    progress: bool = False,
) -> sp.csr_matrix:
    """:func:`jaccard_distance` from L2-normalised features and their ``k1`` neighbour lists."""
    v = encoding_from_neighbors(x, neighbors, k1, k2)
    return jaccard_from_encoding(v, max_distance=max_distance, progress=progress)


def encoding_from_neighbors(
    x: torch.Tensor, neighbors: NeighborLists, k1: int, k2: int
) -> sp.csr_matrix:
    """The k-reciprocal encoding ``V`` of L2-normalised features (weights from ``2 - 2<x_i, x_j>``)."""
    return k_reciprocal_encoding(
        neighbors.indices, neighbors.distances, k1, k2, cosine_pair_distance(x)
    )


def cosine_pair_distance(x: torch.Tensor) -> PairDistance:
    """``d(i, j) = 2 - 2<x_i, x_j>`` for index arrays (see :func:`pair_inner_products`)."""
    inner = pair_inner_products(x)
    return lambda i, j: 2.0 - 2.0 * inner(i, j)


def pair_inner_products(x: torch.Tensor) -> PairDistance:
    """``<x_i, x_j>`` (float64 out, float32 arithmetic) for index arrays ``i`` and ``j``.

    On the CPU the rows are gathered in small chunks into two reused buffers (the cost is the
    random reads of the rows); on a GPU in large chunks with torch.
    """
    if x.device.type != "cpu":

        def on_device(i: np.ndarray, j: np.ndarray) -> np.ndarray:
            out = np.empty(i.size, dtype=np.float64)
            for a in range(0, i.size, 1 << 14):
                ii = torch.as_tensor(i[a : a + (1 << 14)], device=x.device)
                jj = torch.as_tensor(j[a : a + (1 << 14)], device=x.device)
                out[a : a + ii.numel()] = (x[ii] * x[jj]).sum(dim=1).cpu().numpy()
            return out

        return on_device

    xn = x.numpy()
    chunk = 256

    def on_cpu(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        out = np.empty(i.size, dtype=np.float64)
        left = np.empty((chunk, xn.shape[1]), dtype=np.float32)
        right = np.empty_like(left)
        for a in range(0, i.size, chunk):
            m = min(chunk, i.size - a)
            np.take(xn, i[a : a + m], axis=0, out=left[:m])
            np.take(xn, j[a : a + m], axis=0, out=right[:m])
            out[a : a + m] = np.einsum("nd,nd->n", left[:m], right[:m])
        return out

    return on_cpu


def jaccard_from_encoding(
    v: sp.csr_matrix, *, max_distance: float | None = None, progress: bool = False
) -> sp.csr_matrix:
    """The symmetric sparse Jaccard distance matrix of an encoding ``V`` (rows summing to 1).

    Args:
        v: the encoding, ``N x N`` CSR.
        max_distance: keep only the distances ``<= max_distance`` (default: all below 1).
        progress: show a progress bar.
    """
    n = v.shape[0]
    parts = _upper_parts(v, max_distance, progress)
    upper = sp.vstack(parts, format="csr") if parts else sp.csr_matrix(v.shape, dtype=np.float32)
    del parts
    dist = symmetric_from_upper(upper)
    logger.debug("Jaccard distance: %d stored entries, %.1f per row", dist.nnz, dist.nnz / n)
    return dist


def _upper_parts(
    v: sp.csr_matrix, max_distance: float | None, progress: bool
) -> list[sp.csr_matrix]:
    """The distances ``d(i, j)``, ``j >= i``, chunk of rows by chunk of rows."""
    index = ColumnIndex(v)
    chunks = list(index.row_chunks())

    def distances(rows: slice) -> sp.csr_matrix:
        overlap = index.overlap(rows.start, rows.stop, upper=True)
        return _distances(overlap, rows.start, max_distance)

    results = map_chunks(distances, chunks)
    bar = tqdm(results, total=len(chunks), desc="jaccard", disable=not progress, leave=False)
    return list(bar)


def distance_from_overlap(s: np.ndarray) -> np.ndarray:
    """``d_J = 1 - s / (2 - s)``, clamped below at 0, as float32."""
    s = s.astype(np.float64)
    return np.maximum(1.0 - s / (2.0 - s), 0.0).astype(np.float32)


def _distances(overlap: sp.csr_matrix, row_start: int, max_distance: float | None) -> sp.csr_matrix:
    """Jaccard distances of a chunk of overlaps: diagonal exactly 0, only the entries kept."""
    rows = np.repeat(np.arange(overlap.shape[0]) + row_start, np.diff(overlap.indptr))
    d = distance_from_overlap(overlap.data)
    d[overlap.indices == rows] = 0.0
    keep = d < 1.0 if max_distance is None else d <= max_distance
    indptr = np.concatenate([[0], np.cumsum(keep)])[overlap.indptr]
    return sp.csr_matrix((d[keep], overlap.indices[keep], indptr), shape=overlap.shape)


def symmetric_from_upper(upper: sp.csr_matrix) -> sp.csr_matrix:
    """The symmetric CSR matrix (sorted indices) from its upper triangle, diagonal in every row.

    Row ``i`` of the result is column ``i`` of the upper part (the entries ``(i', i)``, ``i' <= i``,
    diagonal last) followed by row ``i`` of the upper part without its diagonal. Both come sorted
    out of CSR transposes (counting sorts); no per-row sort.
    """
    n = upper.shape[0]
    lower = upper.T.tocsr()  # row i: every i' <= i with (i', i) stored, ascending
    upper = lower.T.tocsr()  # row i: every j >= i, ascending, so the diagonal comes first
    lower_count = np.diff(lower.indptr)
    upper_count = np.diff(upper.indptr) - 1  # without the diagonal
    if (upper_count < 0).any() or (upper.indices[upper.indptr[:-1]] != np.arange(n)).any():
        raise AssertionError("the upper triangle must store the diagonal of every row")
    indptr = np.concatenate([[0], np.cumsum(lower_count + upper_count)]).astype(np.int64)
    nnz = int(indptr[-1])
    index_dtype = np.int32 if max(nnz, n) < np.iinfo(np.int32).max else np.int64
    indices = np.empty(nnz, dtype=index_dtype)
    data = np.empty(nnz, dtype=np.float32)
    step = max(1, int(n * (1 << 22) / max(nnz, 1)))
    for a in range(0, n, step):
        b = min(a + step, n)
        # Lower part: the rows' first lower_count entries.
        p0, p1 = lower.indptr[a], lower.indptr[b]
        dest = np.repeat(indptr[a:b] - lower.indptr[a:b], lower_count[a:b]) + np.arange(p0, p1)
        indices[dest] = lower.indices[p0:p1]
        data[dest] = lower.data[p0:p1]
        # Strict upper part: after them, skipping the diagonal (first of each upper row).
        p0, p1 = upper.indptr[a], upper.indptr[b]
        row = np.repeat(np.arange(a, b), np.diff(upper.indptr[a : b + 1]))
        rank = np.arange(p0, p1) - upper.indptr[row]
        strict = rank > 0
        dest = (indptr[row] + lower_count[row] + rank - 1)[strict]
        indices[dest] = upper.indices[p0:p1][strict]
        data[dest] = upper.data[p0:p1][strict]
    out = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    out.has_sorted_indices = True
    return out
