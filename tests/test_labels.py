"""Cluster labels to training classes; per-epoch cluster statistics (cacl.clustering.stats)."""

from __future__ import annotations

import numpy as np
import pytest

from cacl.clustering.stats import ClusterStats, identity_classes, training_classes


def cluster_stats(labels, pids):
    return ClusterStats.of(labels, true_pids=pids).as_dict()


def test_singleton_outliers_become_their_own_classes():
    labels = np.array([5, -1, 5, 2, -1, 2, 2])
    classes = training_classes(labels, "singleton")
    assert classes.tolist() == [1, 2, 1, 0, 3, 0, 0]


def test_drop_outliers():
    assert training_classes(np.array([3, -1, 3]), "drop").tolist() == [0, -1, 0]


def test_no_cluster_at_all():
    assert training_classes(np.array([-1, -1, -1]), "singleton").tolist() == [0, 1, 2]
    assert training_classes(np.array([-1, -1]), "drop").tolist() == [-1, -1]


def test_identity_classes():
    assert identity_classes(np.array([7, 3, 7, 9])).tolist() == [1, 0, 1, 2]


def test_cluster_stats_with_truth():
    labels = np.array([0, 0, 0, 1, 1, -1, 2, 2, 2, 2])
    pids = np.array([1, 1, 1, 2, 2, 3, 4, 4, 4, 4])
    stats = cluster_stats(labels, pids)
    assert (stats["clusters"], stats["outliers"], stats["size_max"]) == (3, 1, 4)
    assert stats["size_histogram"]["2-3"] == 2 and stats["size_histogram"]["4-7"] == 1
    assert stats["nmi"] == pytest.approx(1.0) and stats["ari"] == pytest.approx(1.0)
    worse = cluster_stats(np.zeros(10, dtype=int), pids)
    assert worse["nmi"] < 0.5 and worse["ari"] == pytest.approx(0.0)
    assert "nmi" not in cluster_stats(labels, np.full(10, -1))


def test_one_statistics_type_for_log_record_and_raw_counts():
    raw = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1])
    refined = np.array([0, 0, 0, -1, 1, 1, 1, 1, -1])
    stats = ClusterStats.of(refined, raw, eps=0.5, cameras=np.array([0, 1, 0, 0, 1, 1, 1, 1, 0]))
    assert (stats.n_clusters, stats.n_outliers) == (2, 2)
    assert (stats.n_clusters_raw, stats.n_outliers_raw) == (2, 1)
    record = stats.as_dict()
    assert record["clusters_before_refine"] == 2 and record["outliers_before_refine"] == 1
    assert record["multi_camera_clusters"] == pytest.approx(0.5)
    assert "nmi" not in record and "own_camera_share" not in record
    assert "eps 0.500: 2 clusters (2 before refinement), 2 of 9 un-clustered" in stats.summary()
