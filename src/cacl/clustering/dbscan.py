"""DBSCAN on a sparse precomputed distance matrix (scikit-learn), at memory O(stored entries).

scikit-learn treats the *stored* entries of a sparse precomputed matrix as the only neighbours
(an entry not stored is "not a neighbour", not "distance 0"), keeps explicit zeros, and counts a
pair as neighbours when ``d <= eps``. For a Jaccard matrix whose missing entries mean distance 1
this is exactly DBSCAN on the dense matrix as long as ``eps < 1``. Before calling it, the matrix is
cut down to the entries ``<= eps`` (the only ones it looks at) and each row is sorted by distance
(which it requires, and would otherwise do row by row in Python, on copies of the whole matrix).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.cluster import DBSCAN


def neighborhood_graph(dist: sp.csr_matrix, eps: float) -> sp.csr_matrix:
    """The entries ``<= eps`` of ``dist`` (explicit zeros kept), each row sorted by distance."""
    dist = sp.csr_matrix(dist)
    n = dist.shape[0]
    keep = dist.data <= eps
    data = dist.data[keep]
    indices = dist.indices[keep]
    indptr = np.concatenate([[0], np.cumsum(keep)])[dist.indptr]
    rows = np.repeat(np.arange(n), np.diff(indptr))
    order = np.lexsort((data, rows))
    return sp.csr_matrix((data[order], indices[order], indptr), shape=dist.shape)


def dbscan_sparse(
    dist: sp.spmatrix, eps: float, min_samples: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """DBSCAN labels (int64, -1 for noise) from a sparse distance matrix whose missing entries are 1.

    Args:
        dist: ``N x N`` sparse distances (e.g. :func:`cacl.clustering.jaccard_distance`).
        eps: neighbourhood radius, ``0 <= eps < 1``; a pair is neighbours when ``d <= eps``.
        min_samples: neighbours (itself included) that make a sample a core sample.
        weights: how many samples each row stands for (scikit-learn's ``sample_weight``: a row
            is core when the weights of its neighbourhood, itself included, reach
            ``min_samples``); None: 1 each.
    """
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1) for a sparse Jaccard matrix, got {eps}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    graph = neighborhood_graph(dist, eps)
    model = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed")
    return model.fit_predict(graph, sample_weight=weights).astype(np.int64)
