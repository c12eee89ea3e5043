"""Camera-aware pseudo labels: centring, camera neighbour lists and CA-Jaccard against dense."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from cacl.clustering import pseudo_labels, pseudo_labels_with_stats
from cacl.clustering.camera import ca_encoding, camera_centered, camera_neighbors
from cacl.clustering.jaccard import jaccard_from_encoding
from cacl.clustering.knn import prepare_features
from cacl.errors import CaclError
from kreciprocal_reference import (
    clustered_features,
    dense_ca_jaccard,
    dense_camera_centered,
    densify,
)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def camera_features(n_cams: int = 4, seed: int = 0, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Clustered features plus a strong per-camera offset, and the cameras."""
    x = clustered_features(seed=seed, **kwargs)
    rng = np.random.default_rng(seed + 1)
    cams = rng.integers(0, n_cams, size=len(x))
    offsets = 2.0 * rng.standard_normal((n_cams, x.shape[1]))
    return (x + offsets[cams]).astype(np.float32), cams


def ca_distance(x: np.ndarray, cams: np.ndarray, k1i=5, k1e=20, k2i=3, k2e=3, **kw) -> np.ndarray:
    xt = prepare_features(x, normalize=True)
    lists = camera_neighbors(xt, cams, k1i + 1, k1e + 1, **kw)
    v = ca_encoding(lists, k1i, k1e, k2i, k2e)
    return densify(jaccard_from_encoding(v))


def test_camera_centered_matches_dense_and_removes_camera_means():
    x, cams = camera_features()
    out = camera_centered(prepare_features(x, normalize=True), cams).numpy()
    np.testing.assert_allclose(out, dense_camera_centered(x, cams), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_camera_centered_falls_back_for_one_camera_and_small_cameras():
    x = prepare_features(clustered_features(), normalize=True)
    assert camera_centered(x, np.zeros(len(x), dtype=int)) is x
    cams = np.zeros(len(x), dtype=int)
    cams[:3] = 1  # a camera of 3 rows: too few to centre
    out = camera_centered(x, cams)
    torch.testing.assert_close(out[:3], x[:3])
    assert not torch.allclose(out[3:], x[3:])


def test_camera_centered_rejects_wrong_cameras():
    x = prepare_features(clustered_features(), normalize=True)
    with pytest.raises(CaclError, match="one id per feature row"):
        camera_centered(x, np.zeros(3, dtype=int))


@pytest.mark.parametrize("block", [None, 37])
def test_camera_neighbors_are_exact(block):
    x, cams = camera_features(n_cams=3)
    xt = prepare_features(x, normalize=True)
    lists = camera_neighbors(xt, cams, 6, 21, block_size=block)
    xn = xt.numpy().astype(np.float64)
    dist = 2.0 - 2.0 * xn @ xn.T
    for i in range(len(x)):
        assert lists.intra[i, 0] == i
        same = np.flatnonzero(cams == cams[i])
        other = np.flatnonzero(cams != cams[i])
        assert set(cams[lists.intra[i][lists.intra[i] >= 0]]) == {cams[i]}
        assert not np.isin(lists.inter[i], same).any()
        want_inter = np.sort(dist[i, other])[:21]
        np.testing.assert_allclose(np.sort(lists.inter_distances[i]), want_inter, atol=1e-5)
        want_intra = np.sort(dist[i, same])[:6]
        np.testing.assert_allclose(np.sort(lists.intra_distances[i]), want_intra, atol=1e-5)


@pytest.mark.parametrize("params", [(5, 20, 3, 3), (5, 20, 2, 4), (3, 7, 1, 0)])
def test_ca_jaccard_matches_dense_transcription(params):
    x, cams = camera_features(n_cams=4)
    got = ca_distance(x, cams, *params)
    want = dense_ca_jaccard(x, cams, *params)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_ca_jaccard_with_small_cameras_and_padding():
    """A camera with 2 rows (shorter intra lists) and few rows overall (short inter lists)."""
    x, cams = camera_features(n_cams=3, n_clusters=4, per_cluster=5, outliers=2)
    cams[:2] = 7
    cams[2:] = np.where(cams[2:] == 7, 0, cams[2:])
    got = ca_distance(x, cams, 5, 30, 3, 3)
    want = dense_ca_jaccard(x, cams, 5, 30, 3, 3)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_ca_jaccard_with_one_camera_is_intra_only():
    x = clustered_features()
    cams = np.zeros(len(x), dtype=int)
    got = ca_distance(x, cams, 5, 20, 3, 3)
    np.testing.assert_allclose(got, dense_ca_jaccard(x, cams, 5, 20, 3, 3), atol=1e-5)


@needs_cuda
def test_ca_jaccard_on_cuda_matches_cpu():
    x, cams = camera_features()
    cpu = ca_distance(x, cams)
    xt = prepare_features(torch.from_numpy(x).cuda(), normalize=True)
    lists = camera_neighbors(xt, cams, 6, 21)
    gpu = densify(jaccard_from_encoding(ca_encoding(lists, 5, 20, 3, 3)))
    np.testing.assert_allclose(gpu, cpu, atol=1e-4)


def test_pseudo_labels_ca_jaccard_equals_dense_dbscan():
    x, cams = camera_features()
    labels = pseudo_labels(x, eps=0.6, refine=False, cameras=cams, distance="ca_jaccard")
    want = DBSCAN(eps=0.6, min_samples=4, metric="precomputed").fit_predict(
        dense_ca_jaccard(x, cams)
    )
    np.testing.assert_array_equal(labels, want)


def test_pseudo_labels_center_equals_clustering_of_centred_features():
    x, cams = camera_features()
    got = pseudo_labels(x, eps=0.6, k1=20, cameras=cams, camera_norm="center")
    want = pseudo_labels(dense_camera_centered(x, cams).astype(np.float32), eps=0.6, k1=20)
    np.testing.assert_array_equal(got, want)


def test_camera_aware_options_recover_identities_that_the_cameras_hide():
    """With a strong camera offset the paper's Jaccard groups by camera; centring does not."""
    from sklearn.metrics import adjusted_rand_score

    x = clustered_features(n_clusters=20, per_cluster=12, outliers=0, noise=0.4, seed=3)
    rng = np.random.default_rng(4)
    cams = rng.integers(0, 3, size=len(x))
    x0 = clustered_features(n_clusters=20, per_cluster=12, outliers=0, noise=0.0, seed=3)
    _, ids = np.unique(x0, axis=0, return_inverse=True)
    offsets = 3.0 * rng.standard_normal((3, x.shape[1]))
    xc = (x + offsets[cams]).astype(np.float32)
    plain = pseudo_labels(xc, eps=0.6, k1=20, refine=False)
    centred = pseudo_labels(xc, eps=0.6, k1=20, refine=False, cameras=cams, camera_norm="center")
    ari_plain = adjusted_rand_score(ids.ravel(), plain)
    ari_centred = adjusted_rand_score(ids.ravel(), centred)
    assert ari_centred > ari_plain + 0.2


def test_camera_options_need_cameras_and_valid_names():
    x, cams = camera_features()
    with pytest.raises(CaclError, match="cameras="):
        pseudo_labels(x, distance="ca_jaccard")
    with pytest.raises(CaclError, match="jaccard, ca_jaccard"):
        pseudo_labels(x, cameras=cams, distance="cosine")
    with pytest.raises(CaclError, match="none, center"):
        pseudo_labels(x, cameras=cams, camera_norm="mean")
    _, stats = pseudo_labels_with_stats(x, cameras=cams, camera_norm="center")
    assert "camera_norm" in stats.seconds


def test_own_camera_share_matches_a_naive_count():
    from cacl.clustering.camera import own_camera_share

    x, cams = camera_features(n_cams=3)
    share, chance = own_camera_share(x, cams, k=10)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    own = [np.mean(cams[np.argsort(-sim[i])[:10]] == cams[i]) for i in range(len(x))]
    assert share == pytest.approx(np.mean(own), abs=1e-9)
    counts = {c: (cams == c).sum() for c in np.unique(cams)}
    want_chance = np.mean([(counts[c] - 1) / (len(x) - 1) for c in cams])
    assert chance == pytest.approx(want_chance)
    assert share > 0.9 > chance  # the strong camera offsets bind the neighbours to cameras
    # a sample of the rows when N is large: the same within sampling error here
    sampled, _ = own_camera_share(x, cams, k=10, max_queries=100)
    assert abs(sampled - share) < 0.1


def test_camera_stats_counts_cameras_per_cluster():
    from cacl.clustering.stats import ClusterStats, camera_spread, describe_clusters

    labels = np.array([0, 0, 0, 1, 1, 2, 2, -1])
    cams = np.array([0, 1, 1, 2, 2, 0, 3, 0])
    multi, per_cluster = camera_spread(labels, cams)
    assert multi == pytest.approx(2 / 3)
    assert per_cluster == pytest.approx(5 / 3)
    assert camera_spread(np.full(4, -1), np.arange(4)) == (0.0, 0.0)
    text = describe_clusters(ClusterStats.of(labels, cameras=cams).as_dict())
    assert "67% of clusters span 2+ cameras" in text


def test_config_checks_the_camera_options():
    from cacl.config import ConfigError, load_config

    cfg = load_config("smoke", ["cluster.distance=ca_jaccard", "cluster.camera_norm=center"])
    assert cfg.cluster.distance == "ca_jaccard"
    with pytest.raises(ConfigError, match="jaccard or ca_jaccard"):
        load_config("smoke", ["cluster.distance=cosine"])
    with pytest.raises(ConfigError, match="none or center"):
        load_config("smoke", ["cluster.camera_norm=yes"])
    with pytest.raises(ConfigError, match="at most"):
        load_config("smoke", ["cluster.k2_intra=9"])
