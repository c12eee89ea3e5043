"""Sparse k-reciprocal encoding ``V`` (Zhong et al., CVPR 2017), vectorised over rows.

From ``rank`` (each row's nearest neighbours, itself first, as given by :mod:`cacl.clustering.knn`):

- ``R(i, k) = {j in rank[i][:k+1] : i in rank[j][:k+1]}``, the k-reciprocal neighbours;
- the expanded set ``R*(i)``: ``R(i, k1)`` plus every ``R(c, round(k1/2))`` of a candidate
  ``c in R(i, k1)`` that shares more than 2/3 of its members with ``R(i, k1)``;
- ``V[i, j] = exp(-d(i, j)) / sum_{j' in R*(i)} exp(-d(i, j'))`` on ``R*(i)``, 0 elsewhere;
- local query expansion ``V[i] <- mean of V[rank[i][:k2]]``.

``rank`` may hold fewer than ``k + 1`` columns: ``rank[i][:k+1]`` then means all of them. This is
the widely used clustering variant (SpCL, Cluster Contrast, CACL), which searches ``k1``
neighbours and so takes ``R(i, k1)`` from ``rank[i][:k1]``; the re-ranking of the evaluation passes
``k1 + 1`` columns.

Everything is O(N·k) memory: ``V`` has at most ``|R*(i)|`` entries per row before the query
expansion and at most ``k2`` times as many after it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from cacl.clustering.overlap import map_chunks

#: ``pair_distance(i, j)`` returns ``d(i, j)`` (float64) for index arrays ``i`` and ``j``.
PairDistance = Callable[[np.ndarray, np.ndarray], np.ndarray]

_CHUNK_ROWS = 1024


def reciprocal_neighbors(rank: np.ndarray, k: int) -> np.ndarray:
    """``R(i, k)`` for every ``i``, as an ``(N, min(k + 1, K))`` array padded with -1.

    Members keep the order of ``rank[i]``. ``rank`` may itself be padded with -1 (lists shorter
    than ``K``, as the camera-aware lists of small cameras are); padding is never a member.
    """
    n = rank.shape[0]
    kk = min(k + 1, rank.shape[1])
    forward = rank[:, :kk]
    valid = forward >= 0
    out = np.full((n, kk), -1, dtype=np.int64)
    for a in range(0, n, 4 * _CHUNK_ROWS):
        b = min(a + 4 * _CHUNK_ROWS, n)
        # rank[j][:k+1] of each j in rank[i][:k+1]: (B, kk, kk)
        backward = rank[np.where(valid[a:b], forward[a:b], 0), :kk]
        mutual = (backward == np.arange(a, b)[:, None, None]).any(axis=2) & valid[a:b]
        out[a:b] = np.where(mutual, forward[a:b], -1)
    return out


def expanded_neighbors(r_k1: np.ndarray, r_half: np.ndarray, rows: slice) -> np.ndarray:
    """The expanded sets ``R*(i)`` of the rows ``rows``.

    Args:
        r_k1: ``R(., k1)`` from :func:`reciprocal_neighbors`.
        r_half: ``R(., round(k1/2))`` from :func:`reciprocal_neighbors`.
        rows: the rows to expand.

    Returns:
        ``(B, S)`` int64, each row sorted ascending, duplicates and padding replaced by -1
        (``out >= 0`` marks the members).
    """
    cand = r_k1[rows]  # (B, K1): R(i, k1)
    valid = cand >= 0
    half = r_half[np.where(valid, cand, 0)]  # (B, K1, H): R(c, round(k1/2)) of every candidate
    half_valid = (half >= 0) & valid[:, :, None]
    # |R(c, k1/2) ∩ R(i, k1)|: the sets hold distinct ids, so count members found in R(i, k1).
    found = (half[:, :, :, None] == cand[:, None, None, :]).any(axis=3) & half_valid
    shared = found.sum(axis=2)
    size = half_valid.sum(axis=2)
    accept = valid & (3 * shared > 2 * size)  # |∩| > 2/3 |R(c, k1/2)|, exactly, in integers
    extra = np.where(accept[:, :, None] & half_valid, half, -1).reshape(cand.shape[0], -1)
    members = np.sort(np.concatenate([cand, extra], axis=1), axis=1)
    repeat = np.zeros_like(members, dtype=bool)
    repeat[:, 1:] = members[:, 1:] == members[:, :-1]
    members[repeat] = -1
    return members


def k_reciprocal_encoding(
    rank: np.ndarray,
    rank_distance: np.ndarray,
    k1: int,
    k2: int,
    pair_distance: PairDistance,
) -> sp.csr_matrix:
    """The k-reciprocal encoding ``V`` after local query expansion, as an ``N x N`` CSR matrix.

    Args:
        rank: ``(N, K)`` int64 neighbour lists, nearest first (normally ``rank[i, 0] == i``).
        rank_distance: ``(N, K)`` the distances ``d(i, rank[i, p])`` used in the weights.
        k1: size of the k-reciprocal neighbourhoods.
        k2: size of the local query expansion (1: none).
        pair_distance: computes ``d(i, j)`` for members of ``R*(i)`` missing from ``rank[i]``.

    Returns:
        float32 CSR matrix with sorted indices; every row sums to 1.
    """
    n = rank.shape[0]
    r_k1 = reciprocal_neighbors(rank, k1)
    r_half = reciprocal_neighbors(rank, int(np.around(k1 / 2.0)))
    # Sorted keys i * N + j of the known distances, to look the members of R*(i) up.
    known_key = (np.arange(n, dtype=np.int64)[:, None] * n + rank).ravel()
    known_order = np.argsort(known_key, kind="stable")
    known_key = known_key[known_order]
    known_dist = rank_distance.ravel()[known_order].astype(np.float64)

    def encode(rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row counts, columns, weights)`` of the rows: R*(i) and its softmax weights."""
        members = expanded_neighbors(r_k1, r_half, rows)
        local_row, pos = np.nonzero(members >= 0)
        row = local_row + rows.start
        col = members[local_row, pos]
        key = row * n + col  # ascending: rows ascend, members are sorted
        at = np.minimum(np.searchsorted(known_key, key), known_key.size - 1)
        hit = known_key[at] == key
        dist = np.empty(key.size, dtype=np.float64)
        dist[hit] = known_dist[at[hit]]
        if not hit.all():
            dist[~hit] = pair_distance(row[~hit], col[~hit])
        # Softmax of -d over R*(i) (d is bounded: 2 - 2<x_i, x_j> <= 4, or <= 1 normalised).
        weight = np.exp(-dist)
        size = rows.stop - rows.start
        total = np.bincount(local_row, weights=weight, minlength=size)
        counts = np.bincount(local_row, minlength=size)
        return counts, col, (weight / total[local_row]).astype(np.float32)

    chunks = [slice(a, min(a + _CHUNK_ROWS, n)) for a in range(0, n, _CHUNK_ROWS)]
    counts_parts, cols_parts, vals_parts = zip(*map_chunks(encode, chunks), strict=True)
    counts = np.concatenate(counts_parts)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    v = sp.csr_matrix(
        (np.concatenate(vals_parts), np.concatenate(cols_parts), indptr), shape=(n, n)
    )
    v.has_sorted_indices = True
    if k2 <= 1:
        return v
    return local_query_expansion(v, rank, k2)


def local_query_expansion(v: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """``V[i] <- mean of V[rank[i][:k2]]`` as a sparse product ``A @ V``.

    Entries -1 of ``rank`` (padding) are left out of the mean.
    """
    n = rank.shape[0]
    kk = min(k2, rank.shape[1])
    cols = rank[:, :kk]
    valid = cols >= 0
    count = valid.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(count)])
    weights = np.repeat(1.0 / np.maximum(count, 1), count)
    averaging = sp.csr_matrix((weights, cols[valid], indptr), shape=(n, n))
    expanded = (averaging @ v.astype(np.float64)).tocsr()
    expanded.sort_indices()
    return expanded.astype(np.float32)
