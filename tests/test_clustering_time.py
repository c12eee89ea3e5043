"""Time in the pseudo labels (``cluster.time=on``): the graph's cross-camera edges scaled by a
transit model's factor, checked against a loop over the entries, on hand-made clusters, and in
the trainer."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from cacl.clustering import pseudo_labels_with_stats
from cacl.clustering.timing import node_times, reweight
from cacl.errors import CaclError
from cacl.temporal.fusion import GAMMA, LAMBDA_TIME, fuse, time_factor, transit_weight
from cacl.temporal.transit import TransitModel


def random_graph(n=30, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.uniform(0, 1, size=(n, n))
    dense = np.minimum(dense, dense.T)
    dense[rng.uniform(size=(n, n)) < 0.5] = 0  # sparse: missing entries
    dense = np.maximum(dense, dense.T)
    np.fill_diagonal(dense, 0)
    graph = sp.csr_matrix(np.where(dense <= 0.7, dense, 0))
    graph.setdiag(0)  # the diagonal as explicit zeros, as the Jaccard graph keeps it
    return graph, rng.integers(0, 3, n), rng.uniform(0, 60, n)


def test_reweight_against_a_loop_over_the_entries():
    graph, cams, times = random_graph()
    times[3] = np.nan
    weight = lambda ca, ta, cb, tb: 0.2 + 0.8 * np.exp(-np.abs(tb - ta) / 20)  # noqa: E731
    out, stats = reweight(graph, cams, times, weight, eps=0.6)
    coo = graph.tocoo()
    expected = {}
    for i, j, d in zip(coo.row, coo.col, coo.data):
        if cams[i] != cams[j] and np.isfinite(times[i]) and np.isfinite(times[j]):
            w = 0.2 + 0.8 * np.exp(-abs(times[j] - times[i]) / 20)
            d = 1 - (1 - d) * w
        if d <= 0.6 or i == j:
            expected[(i, j)] = d
    got = out.tocoo()
    assert {(i, j): d for i, j, d in zip(got.row, got.col, got.data)} == pytest.approx(expected)
    assert stats["time_edges"] == int((cams[coo.row] != cams[coo.col]).sum())
    assert stats["time_edges_dropped"] == coo.nnz - len(expected) > 0
    assert (out != out.T).nnz == 0  # a symmetric weight keeps the graph symmetric


def test_same_camera_edges_and_unknown_times_are_left_alone():
    graph, cams, times = random_graph(seed=1)
    out, _ = reweight(graph, np.zeros_like(cams), times, lambda *a: np.full(len(a[0]), 0.3), 0.9)
    assert (abs(out - graph) > 1e-6).nnz == 0
    out, _ = reweight(graph, cams, np.full(len(cams), np.nan), lambda *a: 0.3 * a[1], 0.9)
    assert (abs(out - graph) > 1e-6).nnz == 0


def test_a_weight_out_of_range_is_refused():
    graph, cams, times = random_graph(seed=2)
    with pytest.raises(CaclError, match=r"\(0, 1\]"):
        reweight(graph, cams, times, lambda ca, *_: np.full(len(ca), 1.5), 0.6)
    with pytest.raises(CaclError, match="a camera and a time per node"):
        reweight(graph, cams[:-1], times, lambda ca, *_: np.ones(len(ca)), 0.6)


def test_tracklet_times_are_the_midpoints_of_their_spans():
    ids = np.array([0, 0, 1, 1, 1, 2])
    times = np.array([4.0, 10.0, 1.0, np.nan, 3.0, np.nan])
    got = node_times(times, ids)
    assert got[:2].tolist() == [7.0, 2.0] and np.isnan(got[2])


def test_the_time_factor_is_the_fusions_time_term_scaled_to_one():
    p = np.linspace(0, 1, 11)
    term = 1 / (1 + LAMBDA_TIME * np.exp(-GAMMA * p))
    assert time_factor(p) == pytest.approx(term / term[-1])
    assert time_factor(1.0) == pytest.approx(1.0)
    # the same ratio as the fusion's scores of one similarity at p and at p = 1
    assert time_factor(0.3) == pytest.approx(fuse(0.5, 0.3) / fuse(0.5, 1.0), rel=1e-5)


def two_cameras_one_look(seed=3):
    """Two groups of near-identical crops, camera 0 at t = 0-1 s and camera 1 at t = 300 s,
    and a third group far away; the transit model knows only gaps of about 20 s."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=16)
    far = rng.normal(size=16) * 4
    x = np.concatenate([centre + 0.05 * rng.normal(size=(8, 16)),
                        centre + 0.05 * rng.normal(size=(8, 16)),
                        far + 0.05 * rng.normal(size=(8, 16))]).astype(np.float32)  # fmt: skip
    cams = np.repeat([0, 1, 1], 8)
    times = np.concatenate([np.linspace(0, 1, 8), np.linspace(300, 301, 8), np.zeros(8)])
    counts = np.zeros((2, 2, 400), dtype=int)
    counts[0, 1, 20] = counts[1, 0, 20] = 5
    model = TransitModel(counts, 1.0, np.full((2, 2), 2.0))
    return x, cams, times, model


def test_time_keeps_apart_what_appearance_joins():
    x, cams, times, model = two_cameras_one_look()
    opts = dict(eps=0.6, k1=12, k2=3, min_samples=3, cameras=cams)
    plain, _ = pseudo_labels_with_stats(x, **opts)
    assert plain[0] >= 0 and plain[0] == plain[8]  # one cluster over both cameras
    timed, stats = pseudo_labels_with_stats(x, **opts, times=times,
                                            time_weight=transit_weight(model))  # fmt: skip
    assert timed[0] >= 0 and timed[8] >= 0 and timed[0] != timed[8]
    assert stats.knn["time"]["time_edges_dropped"] > 0
    # a plausible gap (20 s) leaves them joined
    times[8:16] = np.linspace(20, 21, 8)
    joined, _ = pseudo_labels_with_stats(x, **opts, times=times, time_weight=transit_weight(model))
    assert joined[0] == joined[8]
    # the same with tracklets: each group one tracklet, clustered by its mean
    tracklets = np.repeat([0, 1, 2], 8)
    times[8:16] = np.linspace(300, 301, 8)
    for time_weight, together in ((None, True), (transit_weight(model), False)):
        labels, _ = pseudo_labels_with_stats(
            x, **{**opts, "min_samples": 1}, tracklets=tracklets, times=times,
            time_weight=time_weight,
        )  # fmt: skip
        assert bool(labels[0] == labels[8]) is together


def test_time_needs_cameras_and_times():
    x, cams, times, model = two_cameras_one_look()
    with pytest.raises(CaclError, match="cameras and the times"):
        pseudo_labels_with_stats(x, eps=0.6, k1=8, times=times, time_weight=transit_weight(model))
