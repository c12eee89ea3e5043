"""From cluster labels to training classes, and the statistics logged each epoch. Pure functions."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score


def training_classes(cluster_labels: np.ndarray, outliers: str = "singleton") -> np.ndarray:
    """Map DBSCAN labels (-1 = un-clustered) to training classes 0..C-1.

    ``singleton`` (the authors' default): clusters keep their order as classes 0..K-1 and each
    un-clustered sample becomes its own class K, K+1, ... ``drop``: un-clustered samples get -1
    (not trained on).
    """
    labels = np.asarray(cluster_labels, dtype=np.int64)
    if outliers not in ("singleton", "drop"):
        raise ValueError(f"outliers must be singleton or drop, got {outliers!r}")
    classes = np.full(labels.shape, -1, dtype=np.int64)
    clustered = labels >= 0
    if clustered.any():
        _, classes[clustered] = np.unique(labels[clustered], return_inverse=True)
    if outliers == "singleton":
        num_clusters = int(classes.max()) + 1 if clustered.any() else 0
        outlier_idx = np.flatnonzero(~clustered)
        classes[outlier_idx] = num_clusters + np.arange(outlier_idx.size)
    return classes


def identity_classes(pids: np.ndarray) -> np.ndarray:
    """True identities as classes 0..C-1 (supervised upper bound)."""
    _, classes = np.unique(np.asarray(pids), return_inverse=True)
    return classes.astype(np.int64)


def cluster_stats(cluster_labels: np.ndarray, true_pids: np.ndarray | None = None) -> dict:
    """Clusters, outliers, cluster sizes and, when true identities are known, NMI and ARI.

    NMI and ARI treat every un-clustered sample as its own cluster (the labelling used for
    training with singleton classes).
    """
    labels = np.asarray(cluster_labels)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, np.int64)
    sizes = sizes[sizes > 0]
    stats = {
        "clusters": int(sizes.size),
        "outliers": int((labels < 0).sum()),
        "samples": int(labels.size),
        "size_min": int(sizes.min()) if sizes.size else 0,
        "size_median": float(np.median(sizes)) if sizes.size else 0.0,
        "size_max": int(sizes.max()) if sizes.size else 0,
        "size_histogram": size_histogram(sizes),
    }
    if true_pids is not None and np.all(np.asarray(true_pids) >= 0):
        as_classes = training_classes(labels, "singleton")
        stats["nmi"] = float(normalized_mutual_info_score(true_pids, as_classes))
        stats["ari"] = float(adjusted_rand_score(true_pids, as_classes))
    return stats


def describe_clusters(stats: dict) -> str:
    """One log line from :func:`cluster_stats`."""
    text = (
        f"{stats['clusters']} clusters, {stats['outliers']} outliers, sizes "
        f"{stats['size_min']}/{stats['size_median']:.0f}/{stats['size_max']} (min/median/max)"
    )
    if "nmi" in stats:
        text += f", NMI {stats['nmi']:.3f} ARI {stats['ari']:.3f}"
    return text


SIZE_BINS = (2, 4, 8, 16, 32, 64, 128, 256)


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Counts of clusters by size: ``"2-3"``, ``"4-7"``, ... ``">=256"``."""
    edges = list(SIZE_BINS) + [np.inf]
    hist = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        key = f">={lo}" if hi == np.inf else f"{lo}-{int(hi) - 1}"
        hist[key] = int(((sizes >= lo) & (sizes < hi)).sum())
    return hist
