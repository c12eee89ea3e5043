"""The pseudo labels of an epoch (docs/method.md, "Pseudo labels"): clustering of the colour memory, or
the true identities in supervised mode, turned into training classes with their statistics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cacl.clustering.stats import ClusterStats, identity_classes, training_classes
from cacl.config import ClusterConfig
from cacl.errors import TrainingError

log = logging.getLogger(__name__)


def compute_classes(
    features: torch.Tensor,
    cfg: ClusterConfig,
    true_pids: np.ndarray | None,
    supervised: bool = False,
    cameras: np.ndarray | None = None,
    tracklets: tuple[np.ndarray, np.ndarray] | None = None,
    times: np.ndarray | None = None,
    time_weight: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training classes (N,) and the cluster statistics logged each epoch.

    ``cameras`` (one id per row) feed the camera-aware options and the camera statistics.
    Warns when no cluster forms (training goes on with singleton classes, or stops with
    :class:`TrainingError` when ``cfg.on_no_cluster`` is ``stop``) and when one cluster holds
    more than half of the samples. ``tracklets``: ``(ids, cannot-link pairs)`` of the rows; with
    ``cfg.constraints`` other than ``none`` the clustering keeps them (must-link; ``both``: the
    cannot-link too) and an outlier tracklet is one class; their statistics are kept either way.
    ``times`` and ``time_weight`` (``cluster.time=on``): see :mod:`cacl.clustering.timing`.
    """
    if supervised:
        assert true_pids is not None
        classes = identity_classes(true_pids)
        stats = ClusterStats.of(classes, true_pids=true_pids, cameras=cameras, features=features)
        return classes, stats.as_dict()
    from cacl.clustering import pseudo_labels_with_stats

    constrained = tracklets is not None and cfg.constraints != "none"
    labels, raw = pseudo_labels_with_stats(
        features,
        cameras=cameras,
        tracklets=tracklets[0] if constrained else None,
        cannot_link=tracklets[1] if constrained and cfg.constraints == "both" else None,
        **cfg.knn_options(),
        **cfg.clustering_options(),
        **cfg.encoding_options(),
        **cfg.tracklet_options(),
        times=times if time_weight is not None else None,
        time_weight=time_weight,
    )
    constraints = None
    if tracklets is not None:
        from cacl.clustering.tracklets import constraint_stats

        constraints = constraint_stats(labels, *tracklets)
    stats = ClusterStats.of(
        labels,
        eps=raw.eps,
        seconds=raw.seconds,
        knn=raw.knn,
        true_pids=true_pids,
        cameras=cameras,
        features=features,
        constraints=constraints,
    ).as_dict()
    stats["clusters_before_refine"] = raw.n_clusters_raw
    stats["outliers_before_refine"] = raw.n_outliers_raw
    outliers = cfg.outliers
    if stats["clusters"] == 0:
        advice = (
            f"DBSCAN found no cluster at cluster.eps={cfg.eps} (min_samples={cfg.min_samples}); "
            "a larger cluster.eps (e.g. +0.05) merges more"
        )
        if cfg.on_no_cluster == "stop":
            raise TrainingError(advice)
        log.warning("%s; training on singleton classes this epoch", advice)
        outliers = "singleton"
    elif stats["size_max"] > 0.5 * stats["samples"]:
        log.warning(
            "one cluster holds %d of %d samples: clusters are collapsing; try a smaller cluster.eps",
            stats["size_max"],
            stats["samples"],
        )
    groups = tracklets[0] if constrained else None
    return training_classes(labels, outliers, groups if outliers == "singleton" else None), stats
