"""Exact and approximate k nearest neighbours against a brute-force argsort."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cacl.clustering.blocked as blocked
import cacl.clustering.knn as knn_module
from cacl.clustering import InvalidFeaturesError, nearest_neighbors
from cacl.clustering.knn import faiss_available, knn_prepared, prepare_features
from cacl.errors import CaclError
from kreciprocal_reference import clustered_features, squared_euclidean

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def brute_force(x: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = (x * x).sum(1)[:, None] + (x * x).sum(1)[None, :] - 2 * x @ x.T
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, axis=1)


@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
@pytest.mark.parametrize("block_size", [37, 64, 1024])
def test_torch_engine_matches_brute_force(metric: str, block_size: int) -> None:
    x = clustered_features(seed=1)
    result = nearest_neighbors(x, 12, metric=metric, backend="torch", block_size=block_size)
    order, dist = brute_force(x, 12, metric)
    assert result.indices.shape == (len(x), 12) and result.indices.dtype == np.int64
    np.testing.assert_array_equal(result.indices, order)
    np.testing.assert_allclose(result.distances, dist, atol=1e-4)
    np.testing.assert_array_equal(result.indices[:, 0], np.arange(len(x)))


@needs_faiss
@pytest.mark.parametrize("metric", ["cosine", "sqeuclidean"])
def test_faiss_engine_matches_brute_force(metric: str) -> None:
    x = clustered_features(seed=2)
    result = nearest_neighbors(x, 12, metric=metric, backend="faiss")
    order, dist = brute_force(x, 12, metric)
    np.testing.assert_array_equal(result.indices, order)
    np.testing.assert_allclose(result.distances, dist, atol=1e-4)


def test_faiss_engine_needs_faiss(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knn_module, "faiss_available", lambda: False)
    x = clustered_features()
    with pytest.raises(CaclError, match="faiss is not installed"):
        nearest_neighbors(x, 5, backend="faiss")
    assert nearest_neighbors(x, 5).indices.shape == (len(x), 5)  # auto: exact search needs no faiss


def test_many_small_tiles_and_intermediate_merges() -> None:
    x = clustered_features(seed=7)
    result = nearest_neighbors(x, 3, backend="torch", block_size=10)
    np.testing.assert_array_equal(result.indices, brute_force(x, 3, "cosine")[0])


@pytest.mark.parametrize("block", [16, 64])
def test_gpu_neighbour_lists_logic_on_cpu(block: int) -> None:
    """The buffer-and-cut-back lists of the GPU engine, driven tile by tile on the CPU."""
    x = torch.from_numpy(clustered_features(seed=8))
    x = torch.nn.functional.normalize(x, dim=1)
    n, k = x.shape[0], 12
    lists = blocked._DeviceLists(n, k, block, torch.device("cpu"))
    for a in range(0, n, block):
        for c in range(a, n, block):
            lists.add(a, c, 2.0 - 2.0 * x[a : a + block] @ x[c : c + block].T)
    indices, distances = lists.result()
    order, dist = brute_force(x.numpy(), k, "cosine")
    np.testing.assert_array_equal(indices, order)
    np.testing.assert_allclose(distances, dist, atol=1e-4)


def test_k_larger_than_n_and_self_first_among_duplicates() -> None:
    x = clustered_features(n_clusters=2, per_cluster=3, outliers=0)
    x = np.concatenate([x, x[:2], x[:1]])  # row 0 three times, row 1 twice
    result = nearest_neighbors(x, 50, backend="torch", block_size=3)
    assert result.indices.shape == (len(x), len(x))
    np.testing.assert_array_equal(result.indices[:, 0], np.arange(len(x)))
    assert set(result.indices[0, :3]) == {0, 6, 8}
    assert set(result.indices[8, :3]) == {0, 6, 8}
    for row in result.indices:
        assert len(set(row)) == len(row)


def test_self_first_is_enforced_when_missing() -> None:
    indices = np.array([[1, 2, 3], [1, 0, 2], [3, 0, 1], [2, 1, 0]])
    distances = np.arange(12, dtype=np.float32).reshape(4, 3)
    idx, dist = knn_module._self_first(indices, distances)
    np.testing.assert_array_equal(idx, [[0, 1, 2], [1, 0, 2], [2, 3, 0], [3, 2, 1]])
    np.testing.assert_array_equal(dist[:, 0], [0.0, 3.0, 0.0, 0.0])


@pytest.mark.parametrize("make", ["float16", "float64", "torch", "torch_bf16"])
def test_any_float_dtype_and_torch_input(make: str) -> None:
    x = clustered_features(seed=4)
    converted = {
        "float16": lambda: x.astype(np.float16),
        "float64": lambda: x.astype(np.float64),
        "torch": lambda: torch.from_numpy(x),
        "torch_bf16": lambda: torch.from_numpy(x).to(torch.bfloat16),
    }[make]()
    reference = torch.as_tensor(converted).to(torch.float32).numpy()
    result = nearest_neighbors(converted, 8)
    np.testing.assert_array_equal(result.indices, brute_force(reference, 8, "cosine")[0])


def test_invalid_rows_give_a_clear_error() -> None:
    x = clustered_features()
    bad = x.copy()
    bad[[3, 7]] = np.nan
    with pytest.raises(InvalidFeaturesError, match="2 of 220 feature rows contain NaN"):
        nearest_neighbors(bad, 5)
    bad = x.copy()
    bad[5, 1] = np.inf
    with pytest.raises(InvalidFeaturesError, match="first: row 5"):
        nearest_neighbors(bad, 5)
    bad = x.copy()
    bad[[0, 1, 2]] = 0.0
    with pytest.raises(InvalidFeaturesError, match="3 of 220 feature rows have zero norm"):
        nearest_neighbors(bad, 5)
    assert nearest_neighbors(bad, 5, metric="sqeuclidean").indices.shape == (
        220,
        5,
    )  # no normalisation
    with pytest.raises(InvalidFeaturesError, match="non-empty"):
        nearest_neighbors(np.zeros((0, 4)), 5)
    with pytest.raises(InvalidFeaturesError, match="non-empty"):
        nearest_neighbors(np.zeros(4), 5)


def test_farthest_and_tiles_cover_the_upper_triangle() -> None:
    x = torch.from_numpy(clustered_features(seed=5))
    n = x.shape[0]
    seen = np.zeros((n, n), dtype=int)
    full = squared_euclidean(x.numpy(), x.numpy())

    def record(a: int, c: int, tile: torch.Tensor) -> None:
        seen[a : a + tile.shape[0], c : c + tile.shape[1]] += 1
        np.testing.assert_allclose(
            tile.numpy(), full[a : a + tile.shape[0], c : c + tile.shape[1]], atol=1e-4
        )

    result = knn_prepared(x, 4, metric="sqeuclidean", block_size=50, farthest=True, on_block=record)
    assert (seen[np.triu_indices(n)] == 1).all()
    np.testing.assert_allclose(result.farthest, full.max(axis=1), rtol=1e-5)


def test_prepare_features_keeps_unit_rows_without_copy() -> None:
    x = torch.nn.functional.normalize(torch.randn(10, 6), dim=1)
    assert prepare_features(x, normalize=True).data_ptr() == x.data_ptr()
    y = 3.0 * x
    out = prepare_features(y, normalize=True)
    assert out.data_ptr() != y.data_ptr()
    torch.testing.assert_close(out, x)
    torch.testing.assert_close(y, 3.0 * x)  # the input is not modified


@needs_cuda
def test_gpu_tensors_give_the_cpu_answer() -> None:
    x = torch.from_numpy(clustered_features(seed=6))
    cpu = nearest_neighbors(x, 10, backend="torch")
    gpu = nearest_neighbors(x.cuda().half(), 10, backend="torch")
    reference = nearest_neighbors(x.half().float(), 10, backend="torch")
    np.testing.assert_array_equal(gpu.indices, reference.indices)
    assert (gpu.indices == cpu.indices).mean() > 0.95
