"""Sparse k-reciprocal Jaccard distance against the dense transcription of docs/method.md."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cacl.clustering import InvalidFeaturesError, jaccard_distance
from cacl.clustering import overlap as overlap_module
from cacl.clustering.encoding import reciprocal_neighbors
from cacl.clustering.knn import faiss_available
from kreciprocal_reference import clustered_features, dense_jaccard

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def densify(dist: sp.csr_matrix) -> np.ndarray:
    """Missing entries are distance 1."""
    out = np.ones(dist.shape)
    coo = dist.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def check_structure(dist: sp.csr_matrix, n: int) -> None:
    assert isinstance(dist, sp.csr_matrix)
    assert dist.shape == (n, n) and dist.dtype == np.float32
    assert dist.has_sorted_indices
    for i in range(n):  # sorted, no duplicates, explicit zero diagonal
        cols = dist.indices[dist.indptr[i] : dist.indptr[i + 1]]
        assert (np.diff(cols) > 0).all()
        assert i in cols
    assert (dist.diagonal() == 0).all()
    assert dist.data.min() >= 0 and dist.data.max() < 1
    assert abs(dist - dist.T).max() == 0


@pytest.mark.parametrize(
    ("k1", "k2", "seed"), [(30, 6, 0), (20, 6, 1), (10, 1, 2), (5, 3, 3), (7, 2, 4), (4, 4, 5)]
)
def test_matches_dense_reference(k1: int, k2: int, seed: int) -> None:
    x = clustered_features(seed=seed, noise=0.4 + 0.1 * seed)
    dist = jaccard_distance(x, k1, k2)
    reference = dense_jaccard(x, k1, k2)
    check_structure(dist, len(x))
    np.testing.assert_allclose(densify(dist), reference, atol=1e-5)
    # Exactly the pairs below 1 are stored.
    stored = np.zeros(dist.shape, dtype=bool)
    stored[dist.tocoo().row, dist.tocoo().col] = True
    np.testing.assert_array_equal(stored, reference < 1)


def test_small_chunks_give_the_same_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    x = clustered_features(seed=6)
    whole = jaccard_distance(x)
    monkeypatch.setattr(overlap_module, "MEETINGS_PER_CHUNK", 500)
    chunked = jaccard_distance(x, block_size=50)
    np.testing.assert_array_equal(whole.indptr, chunked.indptr)
    np.testing.assert_array_equal(whole.indices, chunked.indices)
    np.testing.assert_allclose(whole.data, chunked.data, atol=1e-6)  # tile shapes round apart


def test_fewer_samples_than_k1() -> None:
    x = clustered_features(n_clusters=3, per_cluster=4, outliers=2, seed=7)
    dist = jaccard_distance(x, k1=30, k2=6)
    check_structure(dist, 14)
    np.testing.assert_allclose(densify(dist), dense_jaccard(x, 30, 6), atol=1e-5)


def test_single_sample() -> None:
    dist = jaccard_distance(np.ones((1, 8), dtype=np.float32))
    assert dist.shape == (1, 1) and dist.nnz == 1 and dist[0, 0] == 0


def test_duplicates_are_at_distance_zero_and_stored() -> None:
    x = clustered_features(seed=8)
    x = np.concatenate([x, x[:3], x[:1]])  # row 0 three times, rows 1 and 2 twice
    n = len(x)
    dist = jaccard_distance(x, 20, 6)
    check_structure(dist, n)
    # Ties among copies may be ordered differently from a stable argsort, so only the copies'
    # own rows are compared with the reference; those equal each other.
    reference = dense_jaccard(x, 20, 6)
    dense = densify(dist)
    for a, b in [(0, n - 4), (0, n - 1), (1, n - 3), (2, n - 2)]:
        row = dist.indices[dist.indptr[a] : dist.indptr[a + 1]]
        assert b in row  # stored (an explicit zero up to float32 rounding), not missing
        assert dist[a, b] <= 1e-6
        np.testing.assert_allclose(dense[a], dense[b], atol=1e-5)
        assert reference[a, b] <= 1e-6


@pytest.mark.parametrize("make", ["float16", "torch", "torch_float64"])
def test_input_types(make: str) -> None:
    x = clustered_features(seed=9)
    converted = {
        "float16": lambda: x.astype(np.float16),
        "torch": lambda: torch.from_numpy(x),
        "torch_float64": lambda: torch.from_numpy(x).double(),
    }[make]()
    as_float32 = torch.as_tensor(converted).float().numpy()
    dist = jaccard_distance(converted)
    np.testing.assert_allclose(densify(dist), dense_jaccard(as_float32), atol=1e-5)


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_backend_gives_the_same_matrix() -> None:
    x = clustered_features(seed=10)
    a = jaccard_distance(x, backend="torch")
    b = jaccard_distance(x, backend="faiss")
    assert a.nnz == b.nnz
    assert abs(a - b).max() < 1e-5


def test_max_distance_keeps_the_near_pairs_only() -> None:
    x = clustered_features(seed=11)
    full = jaccard_distance(x)
    near = jaccard_distance(x, max_distance=0.6)
    expected = full.copy()
    expected.data[expected.data > 0.6] = 2.0  # mark, then drop
    expected = densify(expected)
    got = densify(near)
    np.testing.assert_array_equal(got[expected <= 0.6], expected[expected <= 0.6])
    assert (got[expected > 0.6] == 1).all()
    assert near.nnz == int((full.data <= 0.6).sum())


def test_reciprocal_neighbors_by_definition() -> None:
    rng = np.random.default_rng(12)
    n, k = 40, 6
    rank = np.stack(
        [np.concatenate([[i], rng.permutation(np.delete(np.arange(n), i))[:k]]) for i in range(n)]
    )
    got = reciprocal_neighbors(rank, 4)
    for i in range(n):
        expected = [j for j in rank[i, :5] if i in rank[j, :5]]
        assert list(got[i][got[i] >= 0]) == expected


def test_invalid_features() -> None:
    x = clustered_features()
    x[4] = np.nan
    with pytest.raises(InvalidFeaturesError, match="1 of 220 feature rows contain NaN"):
        jaccard_distance(x)
    x[4] = 0.0
    with pytest.raises(InvalidFeaturesError, match="1 of 220 feature rows have zero norm"):
        jaccard_distance(x)


@needs_cuda
def test_gpu_tensor_input() -> None:
    x = clustered_features(seed=13)
    cpu = jaccard_distance(x)
    gpu = jaccard_distance(torch.from_numpy(x).cuda())
    assert cpu.nnz == gpu.nnz
    assert abs(cpu - gpu).max() < 1e-5
