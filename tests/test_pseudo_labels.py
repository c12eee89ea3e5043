"""DBSCAN on the sparse matrix, cluster refinement and the pseudo-label pipeline, against dense."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from cacl.clustering import (
    ClusterStats,
    InvalidFeaturesError,
    dbscan_sparse,
    jaccard_distance,
    labels_from_distance,
    pseudo_labels,
    pseudo_labels_with_stats,
    refine_clusters,
    sweep_eps,
)
from cacl.clustering.jaccard import encoding_from_neighbors
from cacl.clustering.knn import knn_prepared, prepare_features
from cacl.clustering.refine import refine_from_encoding
from kreciprocal_reference import clustered_features, dense_jaccard, dense_refine, densify

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def dense_dbscan(dist: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(dist)


def dense_pipeline(x: np.ndarray, eps: float = 0.6, gap: float = 0.02, ratio: float = 1.0):
    dist = dense_jaccard(x)
    raw = dense_dbscan(dist, eps, 4)
    if raw.max() < 0:
        return raw
    return dense_refine(dist, raw, dense_dbscan(dist, eps - gap, 4), ratio)


CASES = [dict(seed=s, noise=0.5 + 0.15 * s, n_clusters=30, outliers=40) for s in range(6)]


@pytest.mark.parametrize("case", CASES, ids=[f"seed{c['seed']}" for c in CASES])
def test_sparse_dbscan_equals_dense(case: dict) -> None:
    dist = jaccard_distance(clustered_features(**case))
    dense = densify(dist)
    for eps in (0.3, 0.58, 0.6, 0.75):
        for min_samples in (1, 4, 8):
            np.testing.assert_array_equal(
                dbscan_sparse(dist, eps, min_samples), dense_dbscan(dense, eps, min_samples)
            )


def test_refinement_equals_dense_and_removes_something() -> None:
    removed = 0
    for case in CASES:
        x = clustered_features(**case)
        dist = jaccard_distance(x)
        dense = densify(dist)
        raw, tight = dbscan_sparse(dist, 0.6, 4), dbscan_sparse(dist, 0.58, 4)
        x_t = prepare_features(x, normalize=True)
        v = encoding_from_neighbors(x_t, knn_prepared(x_t, 30), 30, 6)
        for ratio in (0.8, 1.0, 1.25):
            expected = dense_refine(dense, raw, tight, ratio)
            np.testing.assert_array_equal(refine_clusters(dist, raw, tight, ratio), expected)
            np.testing.assert_array_equal(refine_from_encoding(v, raw, tight, ratio), expected)
            removed += int(((expected < 0) & (raw >= 0)).sum())
    assert removed > 0


@pytest.mark.parametrize("case", CASES[:4], ids=[f"seed{c['seed']}" for c in CASES[:4]])
def test_pipeline_equals_dense_transcription(case: dict) -> None:
    x = clustered_features(**case)
    labels = pseudo_labels(x)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, dense_pipeline(x))
    np.testing.assert_array_equal(labels, labels_from_distance(jaccard_distance(x))[0])


def test_without_refinement_the_labels_are_dbscan() -> None:
    x = clustered_features(**CASES[3])
    labels = pseudo_labels(x, refine=False)
    np.testing.assert_array_equal(labels, dense_dbscan(dense_jaccard(x), 0.6, 4))


def test_one_cluster() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(16) + 0.05 * rng.standard_normal((40, 16))).astype(np.float32)
    labels, stats = pseudo_labels_with_stats(x)
    assert (labels == 0).all()
    assert stats.n_clusters == 1 and stats.n_outliers == 0
    np.testing.assert_array_equal(labels, dense_pipeline(x))


def test_no_cluster_at_all(caplog: pytest.LogCaptureFixture) -> None:
    x = np.random.default_rng(1).standard_normal((60, 256)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="cacl.clustering"):
        labels, stats = pseudo_labels_with_stats(x, eps=0.2)
    assert (labels == -1).all()
    assert stats.n_clusters == stats.n_clusters_raw == 0
    assert stats.n_outliers == stats.n_outliers_raw == 60
    assert stats.size_percentiles == {} and sum(stats.size_histogram.values()) == 0
    assert "no cluster" in stats.summary() or "0 clusters" in stats.summary()
    assert any(r.levelno == logging.WARNING and "no cluster" in r.message for r in caplog.records)


def test_fewer_samples_than_k1() -> None:
    x = clustered_features(n_clusters=2, per_cluster=6, outliers=1, noise=0.2, seed=3)
    labels = pseudo_labels(x, k1=30)
    np.testing.assert_array_equal(labels, dense_pipeline(x))
    assert labels.max() == 1
    np.testing.assert_array_equal(pseudo_labels(x[:1]), [-1])


def test_duplicates_cluster_together() -> None:
    rng = np.random.default_rng(4)
    points = rng.standard_normal((4, 32)).astype(np.float32)
    x = np.repeat(points, 5, axis=0)[rng.permutation(20)]
    labels = pseudo_labels(x, k1=8, k2=3)
    assert labels.max() == 3 and (labels >= 0).all()
    for p in points:
        same = (x == p).all(axis=1)
        assert len(set(labels[same])) == 1


@pytest.mark.parametrize("make", ["float16", "torch"])
def test_input_types(make: str) -> None:
    x = clustered_features(**CASES[2])
    converted = x.astype(np.float16) if make == "float16" else torch.from_numpy(x)
    expected = pseudo_labels(torch.as_tensor(converted).float().numpy())
    np.testing.assert_array_equal(pseudo_labels(converted), expected)


def test_invalid_features() -> None:
    x = clustered_features()
    x[[1, 2]] = 0.0
    with pytest.raises(InvalidFeaturesError, match="2 of 220 feature rows have zero norm"):
        pseudo_labels(x)
    with pytest.raises(ValueError, match="eps"):
        dbscan_sparse(jaccard_distance(clustered_features()), 1.0, 4)


def test_statistics_and_logging(caplog: pytest.LogCaptureFixture) -> None:
    x = clustered_features(**CASES[4])
    with caplog.at_level(logging.INFO, logger="cacl.clustering"):
        labels, stats = pseudo_labels_with_stats(x)
    assert isinstance(stats, ClusterStats)
    assert stats.n_samples == len(x)
    assert stats.n_clusters == labels.max() + 1
    assert stats.n_outliers == (labels < 0).sum() >= stats.n_outliers_raw
    np.testing.assert_array_equal(stats.cluster_sizes, np.bincount(labels[labels >= 0]))
    assert sum(stats.size_histogram.values()) == (stats.cluster_sizes >= 2).sum()
    assert set(stats.size_percentiles) == {5, 25, 50, 75, 95}
    assert {"knn", "encoding", "jaccard_distance", "dbscan", "dbscan_tight", "refine"} <= set(
        stats.seconds
    )
    summary = json.loads(json.dumps(stats.as_dict()))
    assert summary["clusters"] == stats.n_clusters
    assert summary["clusters_before_refine"] == stats.n_clusters_raw
    assert summary["size_max"] == stats.cluster_sizes.max()
    messages = [r.getMessage() for r in caplog.records]
    assert any(f"{stats.n_clusters} clusters" in m for m in messages)


def test_sweep_eps() -> None:
    x = clustered_features(**CASES[1])
    dist = jaccard_distance(x)
    results = sweep_eps(dist, [0.4, 0.5, 0.6, 0.7])
    assert [s.eps for _, s in results] == [0.4, 0.5, 0.6, 0.7]
    for labels, stats in results:
        expected_labels, expected = labels_from_distance(dist, eps=stats.eps, log=False)
        np.testing.assert_array_equal(labels, expected_labels)
        assert stats.n_clusters == expected.n_clusters
        assert stats.n_outliers == expected.n_outliers
    assert results[0][1].n_outliers_raw >= results[-1][1].n_outliers_raw


@needs_cuda
def test_gpu_tensor_input() -> None:
    x = clustered_features(**CASES[0])
    np.testing.assert_array_equal(pseudo_labels(torch.from_numpy(x).cuda()), pseudo_labels(x))
