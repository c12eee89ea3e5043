"""The pseudo labels of an epoch (docs/method.md, "Pseudo labels"): clustering of the colour memory, or
the true identities in supervised mode, turned into training classes with their statistics."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from cacl.clustering.stats import ClusterStats, identity_classes, training_classes
from cacl.clustering.tracklets import Tracklets
from cacl.config import ClusterConfig
from cacl.errors import TrainingError

log = logging.getLogger(__name__)


def compute_classes(
    features: torch.Tensor,
    cfg: ClusterConfig,
    true_pids: np.ndarray | None,
    supervised: bool = False,
    cameras: np.ndarray | None = None,
    tracklets: Tracklets | None = None,
    times: np.ndarray | None = None,
    time_weight: Any = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Training classes (N,) and the cluster statistics logged each epoch.

    ``cameras`` (one id per row) feed the camera-aware options and the camera statistics.
    Warns when no cluster forms (training goes on with singleton classes, or stops with
    :class:`TrainingError` when ``cfg.on_no_cluster`` is ``stop``) and when one cluster holds
    more than half of the samples. ``tracklets``: those of the rows; with ``cfg.constraints``
    other than ``none`` the clustering keeps them (must-link; ``both``: the cannot-link too) and
    an outlier tracklet is one class; their statistics (on the tracker's tracklets) are kept
    either way. ``cfg.split_crossings`` on first cuts them where two tracklets' boxes overlap
    (:mod:`cacl.clustering.crossings`), ``cfg.split`` on (or auto) then at likely identity
    switches (:mod:`cacl.clustering.splitting`), and the pieces take their place.
    ``times`` and ``time_weight`` (``cluster.time=on``): see :mod:`cacl.clustering.timing`.
    """
    if supervised:
        assert true_pids is not None
        classes = identity_classes(true_pids)
        stats = ClusterStats.of(classes, true_pids=true_pids, cameras=cameras, features=features)
        return classes, stats.as_dict()
    from cacl.clustering import pseudo_labels_with_stats

    constrained = tracklets is not None and cfg.constraints != "none"
    used, split = tracklets, None
    if constrained and (cfg.split in ("on", "auto") or cfg.split_crossings != "off"):
        used, split = _split(features, tracklets, cameras, cfg, true_pids)
    labels, raw = pseudo_labels_with_stats(
        features,
        cameras=cameras,
        tracklets=used.ids if constrained else None,
        cannot_link=used.pairs if constrained and cfg.constraints == "both" else None,
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

        constraints = constraint_stats(labels, tracklets.ids, tracklets.pairs)
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
    if split is not None:
        stats.update(split)
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
    groups = used.ids if constrained else None
    return training_classes(labels, outliers, groups if outliers == "singleton" else None), stats


def crossing_mask(tracklets: Tracklets, cameras: np.ndarray, min_iou: float) -> np.ndarray:
    """The crossing crops (:func:`cacl.clustering.crossings.crossing_crops`); an error that says
    what is missing when the crops have no frames and boxes."""
    from cacl.clustering.crossings import crossing_crops

    if tracklets.boxes is None or not np.isfinite(tracklets.boxes).all(axis=1).any():
        raise TrainingError(
            "cluster.split_crossings needs each crop's frame and box (the frame, left, top, "
            "width and height columns of tracklets.csv, as cacl crops writes them)"
        )
    return crossing_crops(tracklets.ids, cameras, tracklets.boxes, min_iou)


def _split(
    features: torch.Tensor,
    tracklets: Tracklets,
    cameras: np.ndarray | None,
    cfg: ClusterConfig,
    true_pids: np.ndarray | None,
) -> tuple[Tracklets, dict[str, Any]]:
    """The tracklets cut at crossings and at likely identity switches, with their cannot-link
    pairs, and what the cuts did (with true identities: the share of mixed tracklets before and
    after)."""
    from cacl.clustering.splitting import mixed_share, split_tracklets
    from cacl.clustering.tracklets import cannot_link_pairs

    if cameras is None:
        raise TrainingError("cluster.split=on needs the camera of every training image")
    ids, info = tracklets.ids, {}
    crossing = None
    if cfg.split_crossings != "off":
        crossing = tracklets.crossings
        if crossing is None:
            crossing = crossing_mask(tracklets, cameras, cfg.split_iou)
    if cfg.split_crossings == "on":
        from cacl.clustering.crossings import cut_at_crossings

        ids, info = cut_at_crossings(ids, cameras, tracklets.boxes, cfg.split_iou, crossing)
        log.info(
            "cut %d tracklets at %d crossing crops (+%d pieces)",
            info["crossing_tracklets"],
            info["crossing_crops"],
            info["crossing_pieces"],
        )
    if cfg.split in ("on", "auto"):
        ids, more = split_tracklets(
            features,
            ids,
            cameras,
            tracklets.times,
            ratio=cfg.split_ratio,
            min_side=cfg.split_min,
            candidates=crossing if cfg.split_crossings == "candidates" else None,
        )
        info.update(more)
    pairs = cannot_link_pairs(ids, cameras, tracklets.times)
    known = None if true_pids is None else np.asarray(true_pids) >= 0
    if known is not None and known.any():
        info["mixed_before"] = mixed_share(tracklets.ids[known], true_pids[known])
        info["mixed_after"] = mixed_share(ids[known], true_pids[known])
    if "tracklets_split" in info:
        log.info(
            "split %d of %d pieces at likely identity switches (+%d, cosine distance > %s)",
            info["tracklets_split"],
            int(tracklets.ids.max(initial=-1)) + 1 + info.get("crossing_pieces", 0),
            info["split_pieces"],
            "n/a" if info["split_threshold"] is None else f"{info['split_threshold']:.3f}",
        )
    if "mixed_after" in info:
        log.info(
            "tracklets of 2+ people %.1f%% -> %.1f%%",
            100 * info["mixed_before"],
            100 * info["mixed_after"],
        )
    return Tracklets(ids, pairs, tracklets.times, tracklets.boxes, tracklets.crossings), info
