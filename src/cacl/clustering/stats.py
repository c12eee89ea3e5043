"""What a round of pseudo labelling produced: one statistics type for the log, results.json,
TensorBoard, the report and ``cacl eps``; and the step from cluster labels to training classes.

Pure functions and a frozen dataclass; nothing here changes the labels it describes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

_PERCENTILES = (5, 25, 50, 75, 95)
#: Lower edges of the cluster-size histogram bins: ``"2-3"``, ``"4-7"``, ... ``">=256"``.
SIZE_BINS = (2, 4, 8, 16, 32, 64, 128, 256)


def training_classes(
    cluster_labels: np.ndarray, outliers: str = "singleton", groups: np.ndarray | None = None
) -> np.ndarray:
    """Map DBSCAN labels (-1 = un-clustered) to training classes 0..C-1.

    ``singleton`` (the authors' default): clusters keep their order as classes 0..K-1 and each
    un-clustered sample becomes its own class K, K+1, ... ``drop``: un-clustered samples get -1
    (not trained on). ``groups`` (``singleton`` only): un-clustered samples of one group (a
    tracklet) share one class instead.
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
        if groups is None:
            classes[outlier_idx] = num_clusters + np.arange(outlier_idx.size)
        else:
            group = np.asarray(groups)[outlier_idx]
            classes[outlier_idx] = num_clusters + np.unique(group, return_inverse=True)[1].ravel()
    return classes


def identity_classes(pids: np.ndarray) -> np.ndarray:
    """True identities as classes 0..C-1 (supervised upper bound); an unknown id (-1, e.g. a
    tracker's false positive) is a class of its own."""
    pids = np.asarray(pids, dtype=np.int64)
    return training_classes(np.where(pids >= 0, pids, -1), "singleton")


def size_histogram(sizes: np.ndarray) -> dict[str, int]:
    """Counts of clusters by size: ``"2-3"``, ``"4-7"``, ... ``">=256"``."""
    edges = [*SIZE_BINS, np.inf]
    hist = {}
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        key = f">={lo}" if hi == np.inf else f"{lo}-{int(hi) - 1}"
        hist[key] = int(((sizes >= lo) & (sizes < hi)).sum())
    return hist


def camera_spread(labels: np.ndarray, cameras: np.ndarray) -> tuple[float, float]:
    """``(share of clusters whose samples come from 2+ cameras, mean cameras per cluster)``."""
    labels, cams = np.asarray(labels), np.asarray(cameras)
    clustered = labels >= 0
    if not clustered.any():
        return 0.0, 0.0
    pairs = np.unique(np.stack([labels[clustered], cams[clustered]], axis=1), axis=0)
    per_cluster = np.bincount(pairs[:, 0])
    per_cluster = per_cluster[per_cluster > 0]
    return float((per_cluster >= 2).mean()), float(per_cluster.mean())


@dataclass(frozen=True)
class ClusterStats:
    """What one round of pseudo labelling produced.

    Attributes:
        n_samples: samples clustered (N).
        n_clusters: clusters of the final labels.
        n_outliers: un-clustered samples of the final labels.
        cluster_sizes: size of every final cluster.
        eps: the DBSCAN radius (None for labels that did not come from DBSCAN).
        n_clusters_raw, n_outliers_raw: the same before the refinement.
        seconds: wall-clock seconds per stage (``knn``, ``encoding``, ``jaccard_distance``,
            ``dbscan``, ``dbscan_tight``, ``refine``) for the stages that ran.
        knn: how the neighbours were searched: ``knn`` (``exact`` / ``approximate``) and, for
            the approximate search, ``knn_recall`` measured on a sample of rows.
        nmi, ari: agreement with the true identities where they are known (every un-clustered
            sample counted as its own cluster, the labelling trained on).
        multi_camera_clusters, cameras_per_cluster: how the clusters spread over the cameras.
        own_camera_share, own_camera_chance: share of the 10 nearest neighbours (of the clustered
            features) from the row's own camera, and that share for random neighbours.
    """

    n_samples: int
    n_clusters: int
    n_outliers: int
    cluster_sizes: np.ndarray = field(repr=False)
    eps: float | None = None
    n_clusters_raw: int | None = None
    n_outliers_raw: int | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    knn: dict[str, Any] = field(default_factory=dict)
    nmi: float | None = None
    ari: float | None = None
    multi_camera_clusters: float | None = None
    cameras_per_cluster: float | None = None
    own_camera_share: float | None = None
    own_camera_chance: float | None = None
    #: tracklets: ``tracklets_broken``, ``cannot_link_separated`` and counts
    #: (:func:`cacl.clustering.tracklets.constraint_stats`)
    constraints: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        labels: np.ndarray,
        raw: np.ndarray | None = None,
        *,
        eps: float | None = None,
        seconds: dict[str, float] | None = None,
        knn: dict[str, Any] | None = None,
        true_pids: np.ndarray | None = None,
        cameras: np.ndarray | None = None,
        features: Any = None,
        k: int = 10,
        constraints: dict[str, Any] | None = None,
    ) -> ClusterStats:
        """The statistics of ``labels`` (-1 = un-clustered); ``raw``: the labels before the
        refinement; ``true_pids`` add NMI / ARI (over the rows whose id is known, >= 0); ``cameras`` the camera spread, and
        with ``features`` the own-camera share of their ``k`` nearest neighbours."""
        labels = np.asarray(labels)
        sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
        sizes = sizes[sizes > 0]
        extra: dict[str, Any] = {}
        if raw is not None:
            raw = np.asarray(raw)
            extra["n_clusters_raw"] = int(np.unique(raw[raw >= 0]).size)
            extra["n_outliers_raw"] = int((raw < 0).sum())
        known = None if true_pids is None else np.asarray(true_pids) >= 0
        if known is not None and known.any():
            as_classes = training_classes(labels, "singleton")[known]
            truth = np.asarray(true_pids)[known]
            extra["nmi"] = float(normalized_mutual_info_score(truth, as_classes))
            extra["ari"] = float(adjusted_rand_score(truth, as_classes))
        if cameras is not None:
            multi, per_cluster = camera_spread(labels, cameras)
            extra["multi_camera_clusters"], extra["cameras_per_cluster"] = multi, per_cluster
            if features is not None:
                from cacl.clustering.camera import own_camera_share

                share, chance = own_camera_share(features, np.asarray(cameras), k)
                extra["own_camera_share"], extra["own_camera_chance"] = share, chance
        return cls(
            n_samples=int(labels.size),
            n_clusters=int(sizes.size),
            n_outliers=int((labels < 0).sum()),
            cluster_sizes=sizes,
            eps=None if eps is None else float(eps),
            seconds=dict(seconds or {}),
            knn=dict(knn or {}),
            constraints=dict(constraints or {}),
            **extra,
        )

    @property
    def size_percentiles(self) -> dict[int, float]:
        """Percentiles 5, 25, 50, 75 and 95 of the cluster sizes (empty without clusters)."""
        if self.cluster_sizes.size == 0:
            return {}
        values = np.percentile(self.cluster_sizes, _PERCENTILES)
        return {p: float(v) for p, v in zip(_PERCENTILES, values, strict=True)}

    @property
    def size_histogram(self) -> dict[str, int]:
        """Number of clusters per size bin (:func:`size_histogram`)."""
        return size_histogram(self.cluster_sizes)

    def as_dict(self) -> dict[str, Any]:
        """The JSON record of an epoch's clustering (results.json history, TensorBoard, report):
        ``clusters``, ``outliers``, ``samples``, ``size_min`` / ``size_median`` / ``size_max``,
        ``size_histogram``, and the optional fields that are known."""
        sizes = self.cluster_sizes
        record: dict[str, Any] = {
            "clusters": self.n_clusters,
            "outliers": self.n_outliers,
            "samples": self.n_samples,
            "size_min": int(sizes.min()) if sizes.size else 0,
            "size_median": float(np.median(sizes)) if sizes.size else 0.0,
            "size_max": int(sizes.max()) if sizes.size else 0,
            "size_histogram": self.size_histogram,
        }
        optional = {
            "clusters_before_refine": self.n_clusters_raw,
            "outliers_before_refine": self.n_outliers_raw,
            "nmi": self.nmi,
            "ari": self.ari,
            "multi_camera_clusters": self.multi_camera_clusters,
            "cameras_per_cluster": self.cameras_per_cluster,
            "own_camera_share": self.own_camera_share,
            "own_camera_chance": self.own_camera_chance,
        }
        record.update({k: v for k, v in optional.items() if v is not None})
        if self.seconds:
            record["seconds"] = {k: round(v, 2) for k, v in self.seconds.items()}
        record.update(self.knn)
        record.update(self.constraints)
        return record

    def summary(self) -> str:
        """One log line of the clustering itself (before and after the refinement)."""
        p = self.size_percentiles
        sizes = (
            f"sizes median {p[50]:.0f}, p95 {p[95]:.0f}, max {int(self.cluster_sizes.max())}"
            if p
            else "no cluster"
        )
        eps = f"eps {self.eps:.3f}: " if self.eps is not None else ""
        return (
            f"{eps}{self.n_clusters} clusters ({self.n_clusters_raw} before refinement), "
            f"{self.n_outliers} of {self.n_samples} un-clustered ({self.n_outliers_raw} before "
            f"refinement); {sizes}"
        )


def describe_clusters(stats: dict) -> str:
    """One log line from a record of :meth:`ClusterStats.as_dict` (also a saved run's)."""
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
    if "tracklets_broken" in stats:
        text += f"; {100 * stats['tracklets_broken']:.1f}% of tracklets broken"
    if "cannot_link_separated" in stats:
        text += (
            f", {100 * stats['cannot_link_separated']:.1f}% of "
            f"{stats['cannot_link_pairs']} cannot-link pairs kept apart"
        )
    if "own_camera_share" in stats:
        text += (
            f"; own-camera share of 10-NN {stats['own_camera_share']:.2f} "
            f"(chance {stats['own_camera_chance']:.2f})"
        )
    return text
