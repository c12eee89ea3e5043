"""Pseudo labels of CACL: Jaccard distance, DBSCAN, cluster refinement (docs/method.md, step 1-3).

:func:`pseudo_labels` gives the labels; :func:`pseudo_labels_with_stats` also gives a
:class:`ClusterStats` (clusters, outliers before and after refinement, cluster sizes, seconds per
stage), which is logged at INFO level either way. :func:`sweep_eps` reports what several ``eps``
values would give on one distance matrix, to help choosing ``eps``.
"""

from __future__ import annotations

import inspect
import logging
import resource
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp

from cacl.clustering.approximate import ApproximateOptions, sample_recall
from cacl.clustering.camera import ca_encoding, camera_centered, camera_neighbors, check_cameras
from cacl.clustering.dbscan import dbscan_sparse
from cacl.clustering.jaccard import encoding_from_neighbors, jaccard_from_encoding
from cacl.clustering.knn import FeatureArray, knn_prepared, prepare_features
from cacl.clustering.refine import refine_clusters, refine_from_encoding
from cacl.clustering.stats import ClusterStats
from cacl.clustering.timing import TimeWeight, node_times, reweight
from cacl.clustering.tracklets import (
    TRACKLET_ENCODINGS,
    check_tracklets,
    contract_encoding,
    drop_pairs,
    separate,
    tracklet_cameras,
    tracklet_means,
)
from cacl.errors import CaclError

logger = logging.getLogger(__name__)


#: ``distance`` values of :func:`pseudo_labels_with_stats`.
DISTANCES = ("jaccard", "ca_jaccard")
#: ``camera_norm`` values of :func:`pseudo_labels_with_stats`.
CAMERA_NORMS = ("none", "center")
#: ``knn`` values of :func:`pseudo_labels_with_stats`.
KNN_MODES = ("auto", "exact", "approximate")
#: ``knn="auto"`` searches approximately from this many rows on (benchmarks/bench_pseudo_labels.py:
#: below it the exact search is fast enough; see the README's table).
AUTO_APPROXIMATE_FROM = 100_000
#: Stage times and peak memory are logged at INFO level from this many rows on (DEBUG below).
LOG_STAGES_FROM = 50_000


def pseudo_labels(features: FeatureArray, **options: Any) -> np.ndarray:
    """Cluster labels of the memory features, -1 for un-clustered (int64, length N).

    Takes the keyword arguments of :func:`pseudo_labels_with_stats` (its signature is this one's).
    """
    return pseudo_labels_with_stats(features, **options)[0]


def pseudo_labels_with_stats(
    features: FeatureArray,
    *,
    eps: float = 0.6,
    eps_gap: float = 0.02,
    k1: int = 30,
    k2: int = 6,
    min_samples: int = 4,
    refine: bool = True,
    ratio: float = 1.0,
    cameras: np.ndarray | None = None,
    distance: str = "jaccard",
    camera_norm: str = "none",
    k1_intra: int = 5,
    k1_inter: int = 20,
    k2_intra: int = 3,
    k2_inter: int = 3,
    knn: str = "auto",
    tracklets: np.ndarray | None = None,
    cannot_link: np.ndarray | None = None,
    tracklet_encoding: str = "mean",
    tracklet_k1: int = 10,
    tracklet_k2: int = 3,
    times: np.ndarray | None = None,
    time_weight: TimeWeight | None = None,
    **knn_options: Any,
) -> tuple[np.ndarray, ClusterStats]:
    """Pseudo labels and what they look like.

    Args:
        features: ``(N, D)`` features (numpy or torch, any float dtype, any device), normally the
            branch-1 memory ``M``; L2-normalised inside.
        eps: DBSCAN radius on the Jaccard distance.
        eps_gap: the refinement's second DBSCAN runs at ``eps - eps_gap``.
        k1, k2: the k-reciprocal encoding (docs/method.md).
        min_samples: DBSCAN's ``min_samples`` (the sample itself included).
        refine: apply the cluster refinement.
        ratio: the refinement's ``ratio``.
        cameras: ``(N,)`` integer camera id of every row; needed by the camera-aware options.
        distance: ``"jaccard"`` (the paper's k-reciprocal encoding with ``k1``, ``k2``) or
            ``"ca_jaccard"`` (CA-Jaccard: camera-aware k-reciprocal neighbours with
            ``k1_intra`` / ``k1_inter`` and camera-aware query expansion with ``k2_intra`` /
            ``k2_inter``; see :mod:`cacl.clustering.camera`).
        camera_norm: ``"none"`` or ``"center"`` (the clustering sees each row minus its camera's
            mean row, re-normalised; the input is not modified).
        k1_intra, k1_inter, k2_intra, k2_inter: CA-Jaccard's neighbourhood sizes.
        knn: ``"exact"``, ``"approximate"`` (:mod:`cacl.clustering.approximate`: candidates
            from a PCA projection, exact distances; the recall of the lists on a sample of rows is
            measured and logged) or ``"auto"`` (approximate from :data:`AUTO_APPROXIMATE_FROM`
            rows on).
        tracklets: ``(N,)`` tracklet id of every row (-1: none): the must-link constraint, all
            rows of a tracklet get one label (:mod:`cacl.clustering.tracklets`).
        cannot_link: ``(P, 2)`` pairs of tracklet ids (of ``tracklets`` renumbered 0..T-1 by
            :func:`~cacl.clustering.tracklets.check_tracklets`) that never share a cluster.
        tracklet_encoding: with ``tracklets``, ``"mean"`` (the k-reciprocal encoding of the
            tracklets' mean features, with ``tracklet_k1`` / ``tracklet_k2`` in place of ``k1`` /
            ``k2``) or ``"contract"`` (the crops' encoding contracted to tracklets).
        times: ``(N,)`` time of every row in seconds (NaN: unknown), for ``time_weight``.
        time_weight: ``(cams_a, times_a, cams_b, times_b) -> factor in (0, 1]``: scales the
            similarity of every cross-camera edge of the graph (:mod:`cacl.clustering.timing`;
            tracklets: their cameras and the midpoints of their time spans); needs ``cameras``
            and ``times``.
        **knn_options: ``backend``, ``options`` (:class:`ApproximateOptions` or a dict of its
            fields), ``block_size``, ``progress`` of :func:`cacl.clustering.knn.nearest_neighbors`.

    Returns:
        ``(labels, stats)``: int64 labels ``0..L-1``, -1 for un-clustered, and the statistics.
    """
    seconds: dict[str, float] = {}
    info: dict[str, Any] = {}
    progress = bool(knn_options.get("progress", False))
    if tracklet_encoding not in TRACKLET_ENCODINGS:
        raise CaclError(
            f"tracklet_encoding must be one of {TRACKLET_ENCODINGS}, got {tracklet_encoding!r}"
        )
    weights = ids = None
    if time_weight is not None and (cameras is None or times is None):
        raise CaclError("time in the clustering needs the cameras and the times of the rows")
    row_cameras = cameras
    if tracklets is not None and tracklet_encoding == "mean":
        with _timed(seconds, "tracklets", len(tracklets)):
            n = int(features.shape[0])
            ids = check_tracklets(tracklets, n)
            if cameras is not None:
                cameras = tracklet_cameras(check_cameras(cameras, n), ids)
            features = tracklet_means(features, ids)
            weights = np.bincount(ids).astype(np.float64)
        k1, k2 = min(tracklet_k1, int(features.shape[0])), tracklet_k2
    v = encoding(
        features,
        k1=k1,
        k2=k2,
        cameras=cameras,
        distance=distance,
        camera_norm=camera_norm,
        k1_intra=k1_intra,
        k1_inter=k1_inter,
        k2_intra=k2_intra,
        k2_inter=k2_inter,
        knn=knn,
        seconds=seconds,
        info=info,
        **knn_options,
    )
    if tracklets is not None and ids is None:
        with _timed(seconds, "tracklets", v.shape[0]):
            ids = check_tracklets(tracklets, v.shape[0])
            v = contract_encoding(v, ids)
            weights = np.bincount(ids).astype(np.float64)
    with _timed(seconds, "jaccard_distance", v.shape[0]):
        # DBSCAN only looks at distances <= eps; the refinement recomputes what it needs.
        graph = jaccard_from_encoding(v, max_distance=eps, progress=progress)
    if time_weight is not None:
        with _timed(seconds, "time", v.shape[0]):
            node_cams = check_cameras(row_cameras, len(times))
            if ids is not None:
                node_cams = tracklet_cameras(node_cams, ids)
            graph, info["time"] = reweight(graph, node_cams, node_times(times, ids), time_weight,
                                           eps)  # fmt: skip
    pairs = None
    if ids is not None and cannot_link is not None and len(cannot_link):
        pairs = np.asarray(cannot_link, dtype=np.int64).reshape(-1, 2)
        graph = drop_pairs(graph, pairs)
    refine_with = (
        (lambda raw, tight: refine_from_encoding(v, raw, tight, ratio)) if refine else None
    )
    raw, labels = _dbscan_and_refine(
        graph, eps, eps_gap, min_samples, refine_with, seconds, weights
    )
    if ids is not None:
        if pairs is not None:
            with _timed(seconds, "cannot_link", v.shape[0]):
                labels, ejected = separate(labels, pairs, graph, weights)
            info["cannot_link_ejected"] = ejected
        raw, labels = raw[ids], labels[ids]
    return labels, _statistics(raw, labels, eps, seconds, log=True, knn=info)


pseudo_labels.__signature__ = inspect.signature(pseudo_labels_with_stats).replace(  # type: ignore[attr-defined]
    return_annotation="np.ndarray"
)


def encoding(
    features: FeatureArray,
    *,
    k1: int = 30,
    k2: int = 6,
    cameras: np.ndarray | None = None,
    distance: str = "jaccard",
    camera_norm: str = "none",
    k1_intra: int = 5,
    k1_inter: int = 20,
    k2_intra: int = 3,
    k2_inter: int = 3,
    knn: str = "auto",
    seconds: dict[str, float] | None = None,
    info: dict[str, Any] | None = None,
    **knn_options: Any,
) -> sp.csr_matrix:
    """The encoding ``V`` whose Jaccard distance the clustering uses (see
    :func:`pseudo_labels_with_stats` for the arguments); ``seconds`` receives the stage times,
    ``info`` how the neighbours were searched (``knn``: exact / approximate, ``knn_recall``).

    ``jaccard_from_encoding(encoding(...))`` is the full sparse distance matrix, e.g. to try
    several ``eps`` (:func:`sweep_eps`).
    """
    seconds = {} if seconds is None else seconds
    if distance not in DISTANCES:
        raise CaclError(f"cluster distance must be one of {', '.join(DISTANCES)}, got {distance!r}")
    if camera_norm not in CAMERA_NORMS:
        raise CaclError(
            f"camera_norm must be one of {', '.join(CAMERA_NORMS)}, got {camera_norm!r}"
        )
    info = {} if info is None else info
    progress = bool(knn_options.pop("progress", False))
    options = knn_options.pop("options", None)
    if not isinstance(options, ApproximateOptions):
        options = ApproximateOptions.from_mapping(options)
    if knn_options.pop("approximate", False):  # the keyword of nearest_neighbors
        knn = "approximate"
    if knn not in KNN_MODES:
        raise CaclError(f"knn must be one of {', '.join(KNN_MODES)}, got {knn!r}")
    with _timed(seconds, "prepare", len(features)):
        x = prepare_features(features, normalize=True)
    n = x.shape[0]
    approximate = knn == "approximate" or (knn == "auto" and n >= AUTO_APPROXIMATE_FROM)
    info["knn"] = "approximate" if approximate else "exact"
    cams = None
    if distance != "jaccard" or camera_norm != "none":
        if cameras is None:
            raise CaclError(
                f"distance={distance!r} / camera_norm={camera_norm!r} need the camera id of "
                "every row (cameras=...)"
            )
        cams = check_cameras(cameras, n)
    if camera_norm == "center":
        with _timed(seconds, "camera_norm", n):
            x = camera_centered(x, cams, in_place=x is not features and not _shares(x, features))
    with _timed(seconds, "knn", n):
        if distance == "ca_jaccard":
            lists = camera_neighbors(
                x,
                cams,
                k1_intra + 1,
                k1_inter + 1,
                block_size=knn_options.get("block_size"),
                approximate=approximate,
                options=options,
                progress=progress,
            )
        else:
            neighbors = knn_prepared(
                x,
                k1,
                metric="cosine",
                approximate=approximate,
                options=options,
                progress=progress,
                **knn_options,
            )
    if approximate and options.recall_rows > 0:
        with _timed(seconds, "knn_recall", n):
            if distance == "ca_jaccard":
                kw = {"rows": options.recall_rows, "seed": options.seed, "groups": cams}
                intra = sample_recall(x, lists.intra, within=True, **kw)
                inter = sample_recall(x, lists.inter, **kw)
                info["knn_recall"] = {"intra": intra, "inter": inter}
                recall = f"intra-camera {intra:.3f}, inter-camera {inter:.3f}"
            else:
                found = sample_recall(
                    x, neighbors.indices, rows=options.recall_rows, seed=options.seed
                )
                info["knn_recall"] = found
                recall = f"{found:.3f}"
        logger.info(
            "approximate kNN of %d rows (projection to %d dims, exact re-ranking): recall of "
            "the neighbour lists %s on %d sampled rows",
            n,
            options.dim,
            recall,
            min(n, options.recall_rows),
        )
    with _timed(seconds, "encoding", n):
        if distance == "ca_jaccard":
            v = ca_encoding(lists, k1_intra, k1_inter, k2_intra, k2_inter)
            del lists
        else:
            v = encoding_from_neighbors(x, neighbors, k1, k2)
            del neighbors
    return v


def labels_from_distance(
    dist: sp.spmatrix,
    *,
    eps: float = 0.6,
    eps_gap: float = 0.02,
    min_samples: int = 4,
    refine: bool = True,
    ratio: float = 1.0,
    log: bool = True,
) -> tuple[np.ndarray, ClusterStats]:
    """DBSCAN (and refinement) on a sparse Jaccard matrix: steps 2 and 3 of the pseudo labels.

    ``dist`` must hold every distance below 1 for the refinement (``jaccard_distance`` with no
    ``max_distance``); without ``refine``, the distances ``<= eps`` suffice.
    """
    seconds: dict[str, float] = {}
    refine_with = (lambda raw, tight: refine_clusters(dist, raw, tight, ratio)) if refine else None
    raw, labels = _dbscan_and_refine(dist, eps, eps_gap, min_samples, refine_with, seconds)
    return labels, _statistics(raw, labels, eps, seconds, log=log)


def _dbscan_and_refine(
    graph: sp.spmatrix,
    eps: float,
    eps_gap: float,
    min_samples: int,
    refine_with: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
    seconds: dict[str, float],
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 2 and 3: DBSCAN at ``eps``; with ``refine_with``, DBSCAN at ``eps - eps_gap`` and
    ``refine_with(raw, tight)``. Returns the raw and the final labels. ``weights``: how many
    samples each row stands for (tracklets: crops), for DBSCAN's ``min_samples``."""
    with _timed(seconds, "dbscan", graph.shape[0]):
        raw = dbscan_sparse(graph, eps, min_samples, weights)
    if refine_with is None or raw.max() < 0:
        return raw, raw
    with _timed(seconds, "dbscan_tight", graph.shape[0]):
        tight = dbscan_sparse(graph, max(eps - eps_gap, 0.0), min_samples, weights)
    with _timed(seconds, "refine", graph.shape[0]):
        return raw, refine_with(raw, tight)


@contextmanager
def _timed(seconds: dict[str, float], name: str, rows: int | None = None) -> Iterator[None]:
    """Record the seconds of a stage in ``seconds[name]``; log them with the peak memory so far."""
    start = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - start
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # kB on Linux
    level = logging.INFO if (rows or 0) >= LOG_STAGES_FROM else logging.DEBUG
    logger.log(
        level, "pseudo labels: %s %.1f s (peak memory so far %.1f GB)", name, seconds[name], peak_gb
    )


def _shares(x: Any, features: Any) -> bool:
    """Whether the tensor ``x`` is a view of the caller's ``features`` (numpy or torch)."""
    try:
        base = features.data_ptr() if hasattr(features, "data_ptr") else features.ctypes.data
    except AttributeError:
        return True
    return x.data_ptr() == base


def _statistics(
    raw: np.ndarray,
    labels: np.ndarray,
    eps: float,
    seconds: dict[str, float],
    *,
    log: bool,
    knn: dict[str, Any] | None = None,
) -> ClusterStats:
    stats = ClusterStats.of(labels, raw, eps=eps, seconds=seconds, knn=knn)
    if log:
        logger.info("pseudo labels, %s", stats.summary())
        if stats.n_clusters == 0:
            logger.warning(
                "no cluster at eps %.3f: every sample is un-clustered (try a larger eps)", eps
            )
    return stats


def sweep_eps(
    dist: sp.spmatrix,
    eps_values: Iterable[float],
    *,
    eps_gap: float = 0.02,
    min_samples: int = 4,
    refine: bool = True,
    ratio: float = 1.0,
) -> list[tuple[np.ndarray, ClusterStats]]:
    """What several ``eps`` would give on one Jaccard matrix: ``(labels, stats)`` for each (what
    ``cacl eps`` prints)."""
    out = []
    for eps in eps_values:
        labels, stats = labels_from_distance(
            dist,
            eps=eps,
            eps_gap=eps_gap,
            min_samples=min_samples,
            refine=refine,
            ratio=ratio,
            log=False,
        )
        logger.info("eps sweep, %s", stats.summary())
        out.append((labels, stats))
    return out
