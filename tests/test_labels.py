"""Cluster labels to training classes; per-epoch cluster statistics."""

from __future__ import annotations

import numpy as np
import pytest

from cacl.engine.labels import cluster_stats, identity_classes, training_classes


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
