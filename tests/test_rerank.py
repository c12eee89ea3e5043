"""k-reciprocal re-ranking against a transcription of torchreid's dense ``re_ranking``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cacl.clustering import InvalidFeaturesError
from cacl.evaluation.rerank import _joined, re_ranking, re_ranking_features
from kreciprocal_reference import clustered_features, dense_re_ranking, squared_euclidean
from peak_memory import hwm_increase

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def split(seed: int, n_query: int = 50) -> tuple[np.ndarray, np.ndarray]:
    x = clustered_features(n_clusters=25, per_cluster=8, outliers=30, seed=seed)
    return x[:n_query], x[n_query:]


def distances(query: np.ndarray, gallery: np.ndarray) -> tuple[np.ndarray, ...]:
    return (
        squared_euclidean(query, gallery),
        squared_euclidean(query, query),
        squared_euclidean(gallery, gallery),
    )


PARAMS = [(20, 6, 0.3), (10, 3, 0.5), (5, 1, 0.1), (30, 6, 0.3), (7, 2, 0.0)]


@pytest.mark.parametrize(("k1", "k2", "lam"), PARAMS)
def test_matches_torchreid(k1: int, k2: int, lam: float) -> None:
    query, gallery = split(seed=k1)
    qg, qq, gg = distances(query, gallery)
    expected = dense_re_ranking(qg, qq, gg, k1, k2, lam)
    got = re_ranking(qg, qq, gg, k1, k2, lam)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    from_features = re_ranking_features(query, gallery, k1, k2, lam, block_size=37)
    assert from_features.shape == expected.shape and from_features.dtype == np.float32
    np.testing.assert_allclose(from_features, expected, atol=1e-5)


def test_asymmetric_and_euclidean_inputs_follow_the_reference() -> None:
    query, gallery = split(seed=1)
    qg, qq, gg = (np.sqrt(np.maximum(d, 0)) for d in distances(query, gallery))
    qq = qq + 0.01 * np.random.default_rng(0).random(qq.shape).astype(np.float32)  # not symmetric
    np.testing.assert_allclose(re_ranking(qg, qq, gg), dense_re_ranking(qg, qq, gg), atol=1e-5)
    qg64, qq64, gg64 = (d.astype(np.float64) for d in (qg, qq, gg))
    np.testing.assert_allclose(
        re_ranking(qg64, qq64, gg64), dense_re_ranking(qg64, qq64, gg64), atol=1e-5
    )


def test_small_sets_and_single_query() -> None:
    query, gallery = split(seed=2, n_query=1)
    gallery = gallery[:12]  # q + g smaller than k1 + 1
    qg, qq, gg = distances(query, gallery)
    expected = dense_re_ranking(qg, qq, gg)
    np.testing.assert_allclose(re_ranking(qg, qq, gg), expected, atol=1e-5)
    np.testing.assert_allclose(re_ranking_features(query, gallery), expected, atol=1e-5)


@pytest.mark.parametrize("make", ["float16", "torch"])
def test_feature_input_types(make: str) -> None:
    query, gallery = split(seed=3)
    if make == "float16":
        q_in, g_in = query.astype(np.float16), gallery.astype(np.float16)
    else:
        q_in, g_in = torch.from_numpy(query), torch.from_numpy(gallery)
    q32 = torch.as_tensor(q_in).float().numpy()
    g32 = torch.as_tensor(g_in).float().numpy()
    expected = dense_re_ranking(*distances(q32, g32))
    np.testing.assert_allclose(re_ranking_features(q_in, g_in), expected, atol=1e-5)


def test_errors() -> None:
    query, gallery = split(seed=4)
    qg, qq, gg = distances(query, gallery)
    with pytest.raises(ValueError, match="g_g_dist"):
        re_ranking(qg, qq, gg[:-1, :-1])
    with pytest.raises(ValueError, match="feature sizes differ"):
        re_ranking_features(query, gallery[:, :-1])
    bad = query.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InvalidFeaturesError, match="1 of 50 feature rows contain NaN"):
        re_ranking_features(bad, gallery)


def test_peak_memory_is_the_answer_and_a_fraction_of_it() -> None:
    """The ``q x g`` float32 answer is the only allocation of its size: it is squared, scaled and
    corrected in place (a squared copy of it doubled the peak: 9.4 GB at MSMT17's test size)."""
    q, g = 5000, 15000  # the answer: 286 MB; the features and the encoding: about 40 MB
    x = clustered_features(n_clusters=(q + g) // 20, per_cluster=20, noise=0.5, outliers=0)
    answer = q * g * 4
    rise = hwm_increase(lambda: re_ranking_features(x[:q], x[q:]))
    assert rise < 1.5 * answer, f"peak rose by {rise / answer:.2f} x the answer"


def test_rows_of_one_tensor_are_used_without_a_copy() -> None:
    query, gallery = split(seed=6)
    x = torch.from_numpy(np.concatenate([query, gallery]))
    expected = re_ranking_features(query, gallery)
    np.testing.assert_array_equal(re_ranking_features(x[:50], x[50:]), expected)
    joined = _joined(x[:50], x[50:])
    assert joined.data_ptr() == x.data_ptr() and torch.equal(joined, x)
    apart = _joined(x[:50], x[51:])  # not consecutive: a copy
    assert apart.data_ptr() != x.data_ptr() and torch.equal(apart, torch.cat([x[:50], x[51:]]))


@needs_cuda
def test_gpu_features() -> None:
    query, gallery = split(seed=5)
    expected = re_ranking_features(query, gallery)
    got = re_ranking_features(torch.from_numpy(query).cuda(), torch.from_numpy(gallery).cuda())
    np.testing.assert_allclose(got, expected, atol=1e-5)
