"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) without (q+g) x (q+g) matrices.

:func:`re_ranking` has the signature and the output of the implementation everyone uses (in
torchreid, fast-reid, ...): query-gallery, query-query and gallery-gallery distances in, the
re-ranked ``q x g`` distances out, with the same conventions: the distances are squared, each
point's row is divided by its largest value over all ``q + g`` points, ``rank`` holds the
``k1 + 1`` nearest (the point itself first), the weights are ``exp(-d)`` normalised over the
expanded k-reciprocal set, and the result is ``(1 - lambda) * d_J + lambda * d``.

:func:`re_ranking_features` gives the same result for squared Euclidean distances, straight from
the features: the neighbour lists, the farthest distances and the ``q x g`` block come out of one
blocked pass over the distance matrix (:mod:`cacl.clustering.knn`), and the Jaccard part reuses
the sparse machinery of the pseudo labels. Memory: the ``q x g`` float32 answer (3.8 GB at
MSMT17's 11,659 x 82,161), the features (copied only when the query and gallery rows are not
consecutive rows of one float32 tensor) and O((q+g)·k); every pass over the answer runs in place,
in chunks of rows (a whole-matrix ``np.square`` or ``x * x`` would add a temporary as large as the
answer or the features).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from cacl.clustering.encoding import k_reciprocal_encoding
from cacl.clustering.jaccard import pair_inner_products
from cacl.clustering.knn import FeatureArray, knn_prepared, prepare_features
from cacl.clustering.overlap import ColumnIndex, map_chunks

_ROWS_PER_CHUNK = 512
#: Working memory of one chunk of rows of the answer or of the features.
_CHUNK_BYTES = 16 * 2**20


def re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """Re-ranked query-gallery distances, ``(q, g)`` float32.

    Args:
        q_g_dist: ``(q, g)`` query-gallery distances.
        q_q_dist: ``(q, q)`` query-query distances.
        g_g_dist: ``(g, g)`` gallery-gallery distances.
        k1: k-reciprocal neighbourhood size.
        k2: local query expansion size.
        lambda_value: weight of the original distance in the result.
    """
    qg, qq, gg = (np.asarray(m) for m in (q_g_dist, q_q_dist, g_g_dist))
    q, g = qg.shape
    if qq.shape != (q, q) or gg.shape != (g, g):
        raise ValueError(
            f"expected q_q_dist ({q}, {q}) and g_g_dist ({g}, {g}) for q_g_dist {qg.shape}, "
            f"got {qq.shape} and {gg.shape}"
        )
    n = q + g
    width = min(max(k1 + 1, k2), n)
    rank = np.empty((n, width), dtype=np.int64)
    rank_distance = np.empty((n, width), dtype=np.float32)
    scale = np.empty(n, dtype=np.float32)  # largest squared distance of each point
    for a in range(0, n, _ROWS_PER_CHUNK):
        b = min(a + _ROWS_PER_CHUNK, n)
        # Row i of the "original distance": column i of the full matrix, squared, normalised.
        column = _squared(_full_columns(qg, qq, gg, a, b))
        scale[a:b] = column.max(axis=1)
        column /= scale[a:b, None]
        if width < n:
            nearest = np.argpartition(column, width - 1, axis=1)[:, :width]
        else:
            nearest = np.broadcast_to(np.arange(n), column.shape)
        values = np.take_along_axis(column, nearest, axis=1)
        order = np.argsort(values, axis=1, kind="stable")
        rank[a:b] = np.take_along_axis(nearest, order, axis=1)
        rank_distance[a:b] = np.take_along_axis(values, order, axis=1)

    def pair_distance(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        d = np.empty(i.size, dtype=np.float64)
        for i_query in (True, False):
            for j_query in (True, False):
                sel = ((i < q) == i_query) & ((j < q) == j_query)
                ii, jj = i[sel], j[sel]
                if i_query and j_query:
                    raw = qq[jj, ii]
                elif i_query:
                    raw = qg[ii, jj - q]
                elif j_query:
                    raw = qg[jj, ii - q]
                else:
                    raw = gg[jj - q, ii - q]
                d[sel] = _squared(raw) / scale[ii]
        return d

    out = lambda_value * (_squared(qg) / scale[:q, None]) + np.float32(1.0 - lambda_value)
    v = k_reciprocal_encoding(rank, rank_distance, k1, k2, pair_distance)
    _subtract_jaccard_similarity(out, v, q, 1.0 - lambda_value)
    return out.astype(np.float32, copy=False)


def re_ranking_features(
    query_features: FeatureArray,
    gallery_features: FeatureArray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    *,
    block_size: int | None = None,
) -> np.ndarray:
    """:func:`re_ranking` of the squared Euclidean distances of the features, ``(q, g)`` float32.

    Equal (to float32 rounding) to ``re_ranking(D_qg, D_qq, D_gg)`` with ``D`` the squared
    Euclidean distances ``||x||^2 + ||y||^2 - 2<x, y>``, without building any of them.

    Args:
        query_features: ``(q, D)`` numpy array or torch tensor (any float dtype, any device).
        gallery_features: ``(g, D)``, the same.
        k1, k2, lambda_value: as in :func:`re_ranking`.
        block_size: tile size of the blocked distance pass.

    Two float32 tensors that are consecutive rows of one tensor (``x[:q]`` and ``x[q:]``) are
    used as they are; otherwise the features are concatenated into a float32 copy.
    """
    xq = prepare_features(query_features, normalize=False)
    xg = prepare_features(gallery_features, normalize=False).to(xq.device)
    if xq.shape[1] != xg.shape[1]:
        raise ValueError(f"feature sizes differ: query {xq.shape[1]}, gallery {xg.shape[1]}")
    q, g = xq.shape[0], xg.shape[0]
    x = _joined(xq, xg)
    del xq, xg
    n = q + g
    out = np.empty((q, g), dtype=np.float32)

    def keep_query_gallery(a: int, c: int, tile: torch.Tensor) -> None:
        rows = slice(a, min(a + tile.shape[0], q))
        cols = slice(max(c, q), c + tile.shape[1])
        if rows.start < rows.stop and cols.start < cols.stop:
            block = tile[: rows.stop - a, cols.start - c : cols.stop - c]
            out[rows, cols.start - q : cols.stop - q] = block.cpu().numpy()

    neighbors = knn_prepared(
        x,
        min(max(k1 + 1, k2), n),
        metric="sqeuclidean",
        backend="torch",
        block_size=block_size,
        farthest=True,
        on_block=keep_query_gallery,
    )
    scale = np.square(neighbors.farthest)  # largest squared distance of each point
    rank_distance = np.square(neighbors.distances) / scale[:, None]
    inner = pair_inner_products(x)
    sq = _squared_norms(x)

    def pair_distance(i: np.ndarray, j: np.ndarray) -> np.ndarray:
        d = (sq[i] + sq[j] - 2.0 * inner(i, j)).astype(np.float32)
        return _squared(d) / scale[i]

    v = k_reciprocal_encoding(neighbors.indices, rank_distance, k1, k2, pair_distance)
    del x, neighbors
    # lambda * d / scale + (1 - lambda), in place and row chunk by row chunk (the same float32
    # operations, in the same order, as on the whole matrix)
    step = _rows_per_chunk(g)
    for a in range(0, q, step):
        rows = out[a : a + step]
        np.square(rows, out=rows)
        rows /= scale[a : a + rows.shape[0], None]
        rows *= np.float32(lambda_value)
        rows += np.float32(1.0 - lambda_value)
    _subtract_jaccard_similarity(out, v, q, 1.0 - lambda_value)
    return out


def _joined(xq: torch.Tensor, xg: torch.Tensor) -> torch.Tensor:
    """``torch.cat([xq, xg])``, without a copy when ``xg``'s rows follow ``xq``'s in one storage."""
    q, d = xq.shape
    if (
        xq.device == xg.device
        and xq.dtype == xg.dtype
        and xq.is_contiguous()
        and xg.is_contiguous()
        and xq.untyped_storage().data_ptr() == xg.untyped_storage().data_ptr()
        and xg.storage_offset() == xq.storage_offset() + q * d
    ):
        return torch.as_strided(xq, (q + xg.shape[0], d), (d, 1), xq.storage_offset())
    return torch.cat([xq, xg])


def _rows_per_chunk(columns: int, itemsize: int = 4) -> int:
    """Rows of ``columns`` values that fit in :data:`_CHUNK_BYTES` (at least one)."""
    return max(1, _CHUNK_BYTES // max(1, columns * itemsize))


def _squared_norms(x: torch.Tensor) -> np.ndarray:
    """``(x * x).sum(dim=1)`` as float64 numpy, in chunks of rows (no temporary as large as x)."""
    step = _rows_per_chunk(x.shape[1])
    parts = [(x[a : a + step] * x[a : a + step]).sum(dim=1) for a in range(0, x.shape[0], step)]
    return torch.cat(parts).cpu().numpy().astype(np.float64)


def _squared(a: np.ndarray) -> np.ndarray:
    """``a ** 2`` in ``a``'s precision, as float32 (the reference's ``np.power(d, 2)``)."""
    return np.square(a).astype(np.float32, copy=False)


def _full_columns(qg: np.ndarray, qq: np.ndarray, gg: np.ndarray, a: int, b: int) -> np.ndarray:
    """Columns ``a .. b - 1`` of ``[[qq, qg], [qg^T, gg]]``, transposed: ``(b - a, q + g)``."""
    q = qg.shape[0]
    parts = []
    if a < q:
        top = slice(a, min(b, q))
        parts.append(np.concatenate([qq[:, top].T, qg[top, :]], axis=1))
    if b > q:
        bottom = slice(max(a, q) - q, b - q)
        parts.append(np.concatenate([qg[:, bottom].T, gg[:, bottom].T], axis=1))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _subtract_jaccard_similarity(out: np.ndarray, v: sp.csr_matrix, q: int, weight: float) -> None:
    """``out[i, j - q] -= weight * s / (2 - s)`` for the query-gallery pairs that overlap.

    With ``d_J = 1 - s / (2 - s)`` this turns ``weight + lambda * d`` into the re-ranked distance.
    """
    index = ColumnIndex(v)
    chunks = [
        slice(rows.start, min(rows.stop, q))
        for rows in index.row_chunks(upper=False, min_row=q)
        if rows.start < q
    ]

    def similarity(rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = index.overlap(rows.start, rows.stop, upper=False, min_row=q)
        row = np.repeat(np.arange(rows.start, rows.stop), np.diff(s.indptr))
        sim = s.data.astype(np.float64)
        return row, s.indices - q, (weight * sim / (2.0 - sim)).astype(np.float32)

    for row, col, value in map_chunks(similarity, chunks):
        out[row, col] -= value
