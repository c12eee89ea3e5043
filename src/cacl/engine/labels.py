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
    if "multi_camera_clusters" in stats:
        text += (
            f"; {100 * stats['multi_camera_clusters']:.0f}% of clusters span 2+ cameras, "
            f"{stats['cameras_per_cluster']:.2f} cameras per cluster"
        )
    if "own_camera_share" in stats:
        text += (
            f"; own-camera share of 10-NN {stats['own_camera_share']:.2f} "
            f"(chance {stats['own_camera_chance']:.2f})"
        )
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


def camera_stats(
    cluster_labels: np.ndarray, cameras: np.ndarray, features=None, k: int = 10
) -> dict:
    """How the clusters and the memory relate to the cameras.

    ``multi_camera_clusters``: share of clusters whose samples come from 2+ cameras;
    ``cameras_per_cluster``: mean number of distinct cameras per cluster; with ``features``,
    ``own_camera_share``: share of the ``k`` nearest memory neighbours from the row's own camera,
    and ``own_camera_chance``, the same share for random neighbours.
    """
    labels = np.asarray(cluster_labels)
    cams = np.asarray(cameras)
    clustered = labels >= 0
    stats: dict = {}
    if clustered.any():
        pairs = np.unique(np.stack([labels[clustered], cams[clustered]], axis=1), axis=0)
        per_cluster = np.bincount(pairs[:, 0])
        per_cluster = per_cluster[per_cluster > 0]
        stats["multi_camera_clusters"] = float((per_cluster >= 2).mean())
        stats["cameras_per_cluster"] = float(per_cluster.mean())
    else:
        stats["multi_camera_clusters"] = 0.0
        stats["cameras_per_cluster"] = 0.0
    if features is not None:
        from cacl.clustering.camera import own_camera_share

        share, chance = own_camera_share(features, cams, k)
        stats["own_camera_share"] = share
        stats["own_camera_chance"] = chance
    return stats
