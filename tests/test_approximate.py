"""The approximate neighbour search (PCA-projection candidates, exact re-ranking) against the exact
search: same lists where the projection loses nothing, high recall where it does, exact distances
always, the same pseudo labels, and no N x N allocation."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

import cacl.clustering.knn as knn_module
from cacl.clustering import nearest_neighbors, pseudo_labels_with_stats
from cacl.clustering.approximate import (
    ApproximateOptions,
    exact_rerank,
    fit_projection,
    project,
    sample_recall,
)
from cacl.clustering.camera import camera_neighbors
from cacl.clustering.knn import faiss_available, prepare_features
from cacl.config import config_from_dict
from cacl.errors import CaclError
from kreciprocal_reference import clustered_features
from peak_memory import hwm_increase

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")


def unit(x: np.ndarray) -> torch.Tensor:
    return prepare_features(x, normalize=True)


def cameras_of(n: int, count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, count, n)


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([np.isin(e[e >= 0], f).mean() for f, e in zip(found, exact)]))


def test_a_lossless_projection_gives_exactly_the_exact_lists() -> None:
    # dim = D: the projection keeps every distance, so the candidates hold the true neighbours
    x = clustered_features(n_clusters=30, per_cluster=12, dim=24, seed=2)
    exact = nearest_neighbors(x, 10)
    options = ApproximateOptions(dim=24, exact_below=10**9)
    approx = nearest_neighbors(x, 10, approximate=True, options=options)
    np.testing.assert_array_equal(approx.indices, exact.indices)
    np.testing.assert_allclose(approx.distances, exact.distances, atol=1e-5)


@needs_faiss
def test_graph_candidates_find_the_neighbours_and_every_distance_is_exact() -> None:
    x = clustered_features(n_clusters=40, per_cluster=25, dim=48, noise=0.4, seed=3)
    xt = unit(x)
    exact = nearest_neighbors(x, 12)
    options = ApproximateOptions(dim=40, exact_below=100)  # the HNSW path
    approx = nearest_neighbors(x, 12, approximate=True, options=options)
    np.testing.assert_array_equal(approx.indices[:, 0], np.arange(len(x)))
    assert recall(approx.indices, exact.indices) > 0.95
    true = 2 - 2 * (xt[:, None, :] * xt[torch.as_tensor(approx.indices)]).sum(-1)
    np.testing.assert_allclose(approx.distances[:, 1:], true[:, 1:].numpy(), atol=1e-5)
    assert (np.diff(approx.distances[:, 1:], axis=1) >= -1e-6).all()  # nearest first


def test_exact_rerank_keeps_the_k_nearest_candidates_with_their_distances() -> None:
    rng = np.random.default_rng(0)
    x = unit(rng.standard_normal((300, 16)))
    candidates = np.stack([rng.choice(300, 20, replace=False) for _ in range(300)])
    candidates[::7, 15:] = -1  # some rows with fewer candidates
    idx, dist = exact_rerank(x, candidates, 8, order=rng.permutation(300), chunk=37)
    for i in range(300):
        c = candidates[i][candidates[i] >= 0]
        d = (2 - 2 * (x[c] @ x[i])).numpy()
        keep = np.argsort(d, kind="stable")[:8]
        np.testing.assert_array_equal(np.sort(idx[i]), np.sort(c[keep]))
        np.testing.assert_allclose(dist[i], np.sort(d)[:8], atol=1e-6)


def test_projection_is_the_principal_subspace_and_chunked() -> None:
    rng = np.random.default_rng(1)
    low = rng.standard_normal((2000, 3)) * np.array([5.0, 3.0, 2.0])
    x = torch.as_tensor(
        low @ rng.standard_normal((3, 20)) + 0.01 * rng.standard_normal((2000, 20)),
        dtype=torch.float32,
    )
    mean, basis = fit_projection(x, 3, sample=500)
    y = project(x, mean, basis)
    assert y.shape == (2000, 3) and y.flags.c_contiguous and y.dtype == np.float32
    # the three directions hold (almost) all the variance: distances survive the projection
    centred = (x - x.mean(0)).numpy()
    kept = (y**2).sum() / (centred**2).sum()
    assert kept > 0.999


def test_sample_recall_counts_the_missing_neighbours() -> None:
    x = clustered_features(n_clusters=10, per_cluster=20, seed=4)
    xt = unit(x)
    exact = nearest_neighbors(x, 10).indices
    assert sample_recall(xt, exact, rows=50) == pytest.approx(1.0)
    broken = exact.copy()
    far = np.argsort(-(xt @ xt.T).numpy(), axis=1)[:, :5]  # the 5 farthest rows
    broken[:, 5:] = far
    assert sample_recall(xt, broken, rows=len(x)) == pytest.approx(0.5)


@pytest.mark.parametrize("exact_below", [10**9, 100])
def test_camera_lists_respect_the_cameras_and_match_the_exact_ones(exact_below: int) -> None:
    if exact_below == 100 and not faiss_available():
        pytest.skip("faiss is not installed")
    x = clustered_features(n_clusters=40, per_cluster=20, dim=32, noise=0.4, seed=5)
    cams = cameras_of(len(x))
    xt = unit(x)
    exact = camera_neighbors(xt, cams, 6, 21)
    options = ApproximateOptions(dim=32, exact_below=exact_below)
    approx = camera_neighbors(xt, cams, 6, 21, approximate=True, options=options)
    np.testing.assert_array_equal(approx.intra[:, 0], np.arange(len(x)))
    valid = approx.inter >= 0
    assert (cams[approx.inter[valid]] != np.repeat(cams, valid.sum(1))).all()
    assert (cams[approx.intra] == cams[:, None]).all()
    assert recall(approx.intra, exact.intra) > 0.95
    assert recall(approx.inter, exact.inter) > 0.95
    if exact_below > 100:  # lossless projection, exact candidate search: the same lists
        np.testing.assert_array_equal(approx.inter, exact.inter)


@pytest.mark.parametrize("distance", ["jaccard", "ca_jaccard"])
def test_approximate_pseudo_labels_agree_with_the_exact_ones(distance: str) -> None:
    # identities in a 16-dimensional subspace of 64, a little noise outside it
    low = clustered_features(n_clusters=60, per_cluster=20, dim=16, noise=0.4, seed=6)
    rng = np.random.default_rng(6)
    x = low @ rng.standard_normal((16, 64)) + 0.05 * rng.standard_normal((len(low), 64))
    cams = cameras_of(len(x))
    exact, exact_stats = pseudo_labels_with_stats(x, cameras=cams, distance=distance, knn="exact")
    approx, stats = pseudo_labels_with_stats(
        x, cameras=cams, distance=distance, knn="approximate", options={"dim": 32}
    )
    assert exact_stats.knn == {"knn": "exact"}  # and no recall: nothing to measure
    assert stats.knn["knn"] == "approximate" and "knn_recall" in stats.as_dict()
    assert adjusted_rand_score(exact, approx) >= 0.98


def test_auto_searches_exactly_below_its_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered_features(seed=7)
    _, stats = pseudo_labels_with_stats(x)
    assert stats.knn == {"knn": "exact"}
    monkeypatch.setattr(sys.modules["cacl.clustering.pseudo_labels"], "AUTO_APPROXIMATE_FROM", 100)
    _, stats = pseudo_labels_with_stats(x, options={"exact_below": 10**9})
    assert stats.knn["knn"] == "approximate"


def test_large_approximate_search_needs_faiss_small_one_does_not(monkeypatch) -> None:
    monkeypatch.setattr(knn_module, "faiss_available", lambda: False)
    x = clustered_features(seed=8)
    with pytest.raises(CaclError, match="pip install faiss-cpu"):
        nearest_neighbors(x, 5, approximate=True, options=ApproximateOptions(exact_below=10))
    found = nearest_neighbors(x, 5, approximate=True)  # below exact_below: no graph index
    assert found.indices.shape == (len(x), 5)


def test_bad_options_are_refused_clearly() -> None:
    with pytest.raises(CaclError, match="unknown approximate kNN option"):
        ApproximateOptions.from_mapping({"nprobe": 8})
    with pytest.raises(ValueError, match="candidates"):
        ApproximateOptions(candidates=0.5)
    with pytest.raises(CaclError, match="knn must be one of"):
        pseudo_labels_with_stats(clustered_features(), knn="fast")


def test_cluster_knn_config_values_and_the_older_engine_names() -> None:
    def options(**cluster):
        return config_from_dict({"cluster": cluster}).cluster.knn_options()

    assert options()["knn"] == "auto"
    assert options(knn="approximate", knn_dim=32) == {
        "knn": "approximate",
        "backend": "auto",
        "options": {"dim": 32},
    }
    assert options(knn="faiss")["knn"] == "exact" and options(knn="faiss")["backend"] == "faiss"


def test_no_step_of_the_approximate_pipeline_allocates_n_by_n() -> None:
    n, dim = 24_000, 32  # N x N float32: 2.3 GB
    x = clustered_features(n_clusters=n // 20, per_cluster=20, dim=dim, noise=0.5, outliers=0)
    cams = cameras_of(n)
    options = {"dim": 16, "recall_rows": 200}
    for distance in ("jaccard", "ca_jaccard"):
        grew = hwm_increase(
            lambda distance=distance: pseudo_labels_with_stats(
                x, cameras=cams, distance=distance, knn="approximate", options=options
            )
        )
        assert grew < 400 * 2**20, f"{distance}: peak grew by {grew / 2**20:.0f} MB"
