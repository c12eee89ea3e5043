"""Cluster refinement of CACL (paper Section III-C, as in the authors' code).

A second DBSCAN with a smaller ``eps`` over-segments each raw cluster ``C`` into sub-clusters
``C_j = C ∩ T`` for the tight clusters ``T`` (a tight outlier is a sub-cluster of its own). With
``d`` the Jaccard distance (1 for pairs not stored):

- ``D(C) = (1 / |C|^2) sum_{i, k in C} d(i, k)`` (all ordered pairs, diagonal included);
- ``D(C_j | C) = (1 / |C \\ C_j|^2) sum_{i in C_j} sum_{k in C \\ C_j} d(i, k)``, 0 when ``C_j = C``;
- the samples of ``C_j`` stay in ``C`` if ``ratio * D(C_j | C) <= D(C)``, else they become -1.

Every sum is ``(number of pairs) - sum over stored pairs of (1 - d)``, and the stored pairs inside
the clusters are visited once, in chunks of rows: no ``|C| x |C|`` block and nothing N x N. From
a distance matrix (:func:`refine_clusters`) that is O(stored entries); from the encoding
(:func:`refine_from_encoding`, used by the pipeline) only the pairs inside each cluster are
computed, O(sum |C|^2) at most.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cacl.clustering.jaccard import distance_from_overlap
from cacl.clustering.overlap import ColumnIndex, map_chunks

_ENTRIES_PER_CHUNK = 1 << 22


def subclusters(labels: np.ndarray, tight_labels: np.ndarray) -> np.ndarray:
    """Id of the sub-cluster ``C_j = C ∩ T`` of every clustered sample (-1 for raw outliers)."""
    n = labels.size
    clustered = labels >= 0
    tight = np.where(tight_labels >= 0, tight_labels, n + np.arange(n))  # outliers: alone
    key = labels.astype(np.int64) * (2 * n + 1) + tight
    sub = np.full(n, -1, dtype=np.int64)
    sub[clustered] = np.unique(key[clustered], return_inverse=True)[1].ravel()
    return sub


def refine_clusters(
    dist: sp.spmatrix,
    labels: np.ndarray,
    tight_labels: np.ndarray,
    ratio: float = 1.0,
) -> np.ndarray:
    """Drop the sub-clusters that sit far from the rest of their cluster.

    Args:
        dist: ``N x N`` sparse distances, missing entries meaning 1 (see ``jaccard_distance``).
        labels: raw DBSCAN labels at ``eps`` (-1: outlier).
        tight_labels: DBSCAN labels at ``eps - eps_gap`` on the same distances.
        ratio: the ``ratio`` of the rule (1.0 in the paper).

    Returns:
        int64 labels: the kept samples' clusters renumbered ``0..L-1`` in the order of their raw
        labels, -1 for outliers (raw or removed).
    """
    dist = sp.csr_matrix(dist)
    labels = np.asarray(labels, dtype=np.int64)
    sub = subclusters(labels, np.asarray(tight_labels, dtype=np.int64))
    sums = _SimilaritySums(labels, sub)
    n = dist.shape[0]
    rows_per_chunk = max(1, int(_ENTRIES_PER_CHUNK * n / max(dist.nnz, 1)))
    for a in range(0, n, rows_per_chunk):
        b = min(a + rows_per_chunk, n)
        p0, p1 = dist.indptr[a], dist.indptr[b]
        row = np.repeat(np.arange(a, b), np.diff(dist.indptr[a : b + 1]))
        sums.add(row, dist.indices[p0:p1], dist.data[p0:p1], ordered=True)
    return sums.refined(ratio)


def refine_from_encoding(
    v: sp.csr_matrix, labels: np.ndarray, tight_labels: np.ndarray, ratio: float = 1.0
) -> np.ndarray:
    """:func:`refine_clusters` straight from the k-reciprocal encoding ``V``.

    The Jaccard distances inside the raw clusters are recomputed (pairs of one cluster only, each
    once), so the full distance matrix never needs to exist; the result equals
    ``refine_clusters(jaccard_from_encoding(v), labels, tight_labels, ratio)``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    sub = subclusters(labels, np.asarray(tight_labels, dtype=np.int64))
    sums = _SimilaritySums(labels, sub)
    if sums.n_clusters == 0:
        return labels.copy()
    index = ColumnIndex(v, group=labels)

    def pairs(rows: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        overlap = index.overlap(rows.start, rows.stop, upper=True)
        row = np.repeat(np.arange(rows.start, rows.stop), np.diff(overlap.indptr))
        d = distance_from_overlap(overlap.data)
        d[overlap.indices == row] = 0.0
        return row, overlap.indices, d

    for row, col, d in map_chunks(pairs, index.row_chunks()):
        sums.add(row, col, d, ordered=False)
    return sums.refined(ratio)


class _SimilaritySums:
    """Sums of ``1 - d`` over stored pairs inside each cluster and from each sub-cluster outwards."""

    def __init__(self, labels: np.ndarray, sub: np.ndarray) -> None:
        self.labels, self.sub = labels, sub
        self.n_clusters, n_sub = int(labels.max()) + 1, int(sub.max()) + 1
        self.clustered = labels >= 0
        self.within = np.zeros(max(self.n_clusters, 0))
        self.across = np.zeros(max(n_sub, 0))

    def add(self, row: np.ndarray, col: np.ndarray, d: np.ndarray, *, ordered: bool) -> None:
        """Add stored pairs: every ordered pair (``ordered``), or each unordered pair once."""
        labels, sub = self.labels, self.sub
        same = self.clustered[row] & (labels[row] == labels[col])
        row, col = row[same], col[same]
        sim = 1.0 - d[same].astype(np.float64)
        weight = sim if ordered else np.where(row == col, sim, 2.0 * sim)
        self.within += np.bincount(labels[row], weights=weight, minlength=self.within.size)
        apart = sub[row] != sub[col]
        self.across += np.bincount(sub[row][apart], weights=sim[apart], minlength=self.across.size)
        if not ordered:
            self.across += np.bincount(
                sub[col][apart], weights=sim[apart], minlength=self.across.size
            )

    def refined(self, ratio: float) -> np.ndarray:
        """Apply the rule ``ratio * D(C_j | C) <= D(C)`` and renumber the kept clusters."""
        labels, sub, clustered = self.labels, self.sub, self.clustered
        if self.n_clusters == 0:
            return labels.copy()
        cluster_size = np.bincount(labels[clustered], minlength=self.n_clusters).astype(float)
        sub_size = np.bincount(sub[clustered], minlength=self.across.size).astype(float)
        sub_cluster = np.zeros(self.across.size, dtype=np.int64)
        sub_cluster[sub[clustered]] = labels[clustered]
        spread = 1.0 - self.within / np.maximum(cluster_size, 1.0) ** 2  # D(C)
        rest = cluster_size[sub_cluster] - sub_size  # |C \ C_j|
        pairs_apart = sub_size * rest - self.across  # sum of d from C_j to C \ C_j
        d_sub = np.where(rest > 0, pairs_apart / np.maximum(rest, 1.0) ** 2, 0.0)  # D(C_j | C)
        keep_sub = ratio * d_sub <= spread[sub_cluster]
        kept = clustered.copy()
        kept[clustered] = keep_sub[sub[clustered]]
        refined = np.full(labels.size, -1, dtype=np.int64)
        refined[kept] = np.unique(labels[kept], return_inverse=True)[1].ravel()
        return refined
