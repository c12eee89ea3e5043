"""Pseudo labels at scale: sparse k-reciprocal Jaccard distance, DBSCAN, cluster refinement.

Nothing here builds an N x N dense array: memory is O(N·k) throughout.

- :func:`nearest_neighbors` -- exact (or approximate, faiss) k nearest neighbours, CPU or GPU;
- :func:`jaccard_distance` -- the k-reciprocal Jaccard distance as a sparse matrix;
- :func:`dbscan_sparse`, :func:`refine_clusters` -- the two clustering steps;
- :func:`pseudo_labels`, :func:`pseudo_labels_with_stats`, :func:`sweep_eps` -- the pipeline;
- :class:`ClusterStats`, :func:`training_classes` -- what it produced, and the training classes.
"""

from cacl.clustering.dbscan import dbscan_sparse
from cacl.clustering.jaccard import jaccard_distance
from cacl.clustering.knn import InvalidFeaturesError, NeighborLists, nearest_neighbors
from cacl.clustering.pseudo_labels import (
    labels_from_distance,
    pseudo_labels,
    pseudo_labels_with_stats,
    sweep_eps,
)
from cacl.clustering.refine import refine_clusters
from cacl.clustering.stats import ClusterStats, training_classes

__all__ = [
    "ClusterStats",
    "InvalidFeaturesError",
    "NeighborLists",
    "dbscan_sparse",
    "jaccard_distance",
    "labels_from_distance",
    "nearest_neighbors",
    "pseudo_labels",
    "pseudo_labels_with_stats",
    "refine_clusters",
    "sweep_eps",
    "training_classes",
]
