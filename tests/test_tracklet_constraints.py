"""Tracklet-aware pseudo labels: the must-link and cannot-link constraints on small hand-made data,
each piece against a slow obvious version."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp

from cacl.clustering import pseudo_labels_with_stats
from cacl.clustering.dbscan import dbscan_sparse
from cacl.clustering.stats import training_classes
from cacl.clustering.tracklets import (
    cannot_link_pairs,
    check_tracklets,
    constraint_stats,
    contract_encoding,
    drop_pairs,
    separate,
    tracklet_cameras,
    tracklet_means,
)

ENCODINGS = pytest.mark.parametrize("encoding", ["mean", "contract"])


def test_cannot_link_pairs_against_all_pairs():
    rng = np.random.default_rng(0)
    n = 300
    ids = check_tracklets(rng.integers(0, 60, n), n)
    cameras_of = rng.integers(0, 3, ids.max() + 1)
    cameras = cameras_of[ids]
    times = rng.uniform(0, 100, n)
    times[rng.random(n) < 0.05] = np.nan
    got = {tuple(p) for p in cannot_link_pairs(ids, cameras, times).tolist()}
    want = set()
    for a, b in itertools.combinations(range(ids.max() + 1), 2):
        ta, tb = times[ids == a], times[ids == b]
        ta, tb = ta[np.isfinite(ta)], tb[np.isfinite(tb)]
        if cameras_of[a] != cameras_of[b] or not ta.size or not tb.size:
            continue
        if ta.min() <= tb.max() and tb.min() <= ta.max():
            want.add((a, b))
    assert got == want and want


def test_contraction_against_dense_means_and_sums():
    rng = np.random.default_rng(1)
    v = sp.random(40, 40, density=0.2, random_state=2, format="csr")
    ids = check_tracklets(rng.integers(0, 9, 40), 40)
    t = ids.max() + 1
    dense = v.toarray()
    want = np.zeros((t, t))
    for a in range(t):
        row = dense[ids == a].mean(axis=0)
        for b in range(t):
            want[a, b] = row[ids == b].sum()
    np.testing.assert_allclose(contract_encoding(v, ids).toarray(), want, rtol=1e-5, atol=1e-7)


def test_lone_crops_get_tracklets_of_their_own():
    ids = check_tracklets(np.array([5, -1, 5, -1, 2]), 5)
    assert ids[0] == ids[2] and len({ids[1], ids[3], ids[4], ids[0]}) == 4


def test_one_crop_per_tracklet_is_the_plain_pipeline():
    x = np.random.default_rng(3).normal(size=(120, 16)).astype(np.float32)
    x[:60] += 2.0
    plain, _ = pseudo_labels_with_stats(x, eps=0.6, k1=10, k2=3)
    same, _ = pseudo_labels_with_stats(x, eps=0.6, k1=10, k2=3, tracklets=np.arange(120))
    np.testing.assert_array_equal(plain, same)


def blobs(seed=4, people=6, per=12, dim=12):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, dim)) * 3
    pid = np.repeat(np.arange(people), per)
    x = centres[pid] + rng.normal(size=(people * per, dim))
    return x.astype(np.float32), pid


@ENCODINGS
def test_a_tracklet_is_never_split(encoding):
    x, pid = blobs()
    rng = np.random.default_rng(5)
    # tracklets of 3 crops, some of them mixing two people (an identity switch)
    tracklets = np.arange(len(x)) // 3
    mixed = rng.choice(len(x), 10, replace=False)
    tracklets[mixed] = rng.integers(0, tracklets.max() + 1, 10)
    for eps in (0.3, 0.5, 0.7):
        plain, _ = pseudo_labels_with_stats(x, eps=eps, k1=8, k2=3, min_samples=3)
        labels, _ = pseudo_labels_with_stats(
            x, eps=eps, k1=8, k2=3, min_samples=3, tracklets=tracklets, tracklet_encoding=encoding
        )
        for t in np.unique(tracklets):
            assert len(set(labels[tracklets == t])) == 1
        assert constraint_stats(labels, check_tracklets(tracklets, len(x)))["tracklets_broken"] == 0
    # the plain pipeline does break some of them: the test can fail
    assert constraint_stats(plain, check_tracklets(tracklets, len(x)))["tracklets_broken"] > 0


@ENCODINGS
def test_an_overlapping_pair_is_never_joined(encoding):
    x, pid = blobs(seed=6)
    tracklets = np.arange(len(x)) // 4
    ids = check_tracklets(tracklets, len(x))
    # cannot-link pairs between tracklets of the SAME person: the clustering would join them
    t_pid = pid[::4]
    pairs = np.array(
        [
            (a, b)
            for a, b in itertools.combinations(range(ids.max() + 1), 2)
            if t_pid[a] == t_pid[b] and (a + b) % 3 == 0
        ]
    )
    opts = dict(eps=0.6, k1=8, k2=3, min_samples=4, tracklets=tracklets, tracklet_encoding=encoding)
    must, _ = pseudo_labels_with_stats(x, **opts)
    assert constraint_stats(must, ids, pairs)["cannot_link_separated"] < 1  # they would join
    both, stats = pseudo_labels_with_stats(x, **opts, cannot_link=pairs)
    t_label = both[::4]
    for a, b in pairs:
        assert t_label[a] < 0 or t_label[a] != t_label[b]
    assert constraint_stats(both, ids, pairs)["cannot_link_separated"] == 1.0
    assert constraint_stats(both, ids)["tracklets_broken"] == 0


def test_separate_on_a_chain():
    # a - b - c joined in one cluster by chains; (a, c) cannot-link; b is the best connected
    d = sp.csr_matrix(np.array([[0, 0.2, 0.9], [0.2, 0, 0.3], [0.9, 0.3, 0]]))
    labels, ejected = separate(np.array([0, 0, 0]), np.array([[0, 2]]), d, np.array([3, 3, 3.0]))
    # a and c have one pair each; c has the weaker affinity (0.7 + 0.1 vs 0.8 + 0.1) -> out
    assert labels.tolist() == [0, 0, -1] and ejected == 1
    # a tracklet in two pairs goes first, even if well connected
    labels, _ = separate(np.array([0, 0, 0]), np.array([[0, 1], [1, 2]]), d, np.ones(3))
    assert labels.tolist() == [0, -1, 1] or labels.tolist() == [0, -1, 0]
    assert labels[1] == -1


def test_drop_pairs_removes_both_directions():
    d = sp.csr_matrix(np.array([[0, 0.2, 0.4], [0.2, 0, 0.3], [0.4, 0.3, 0]]))
    out = drop_pairs(d, np.array([[0, 2]])).toarray()
    assert out[0, 2] == 0 and out[2, 0] == 0 and out[0, 1] == 0.2 and out[1, 2] == 0.3


def test_weighted_dbscan_counts_crops():
    # two rows 0.1 apart; alone each is not core at min_samples 4, but weighted 2 + 2 they are
    d = sp.csr_matrix(np.array([[0, 0.1], [0.1, 0]]))
    assert dbscan_sparse(d, 0.5, 4).tolist() == [-1, -1]
    assert dbscan_sparse(d, 0.5, 4, np.array([2.0, 2.0])).tolist() == [0, 0]


def test_constraint_stats_by_hand():
    ids = np.array([0, 0, 1, 1, 2, 3])
    labels = np.array([5, 5, 5, -1, 7, 7])
    pairs = np.array([[0, 1], [2, 3], [0, 2]])
    s = constraint_stats(labels, ids, pairs)
    # tracklets of 2+ crops: 0 (whole), 1 (5 and -1: broken)
    assert s["tracklets_broken"] == 0.5
    # (0, 1) share cluster 5; (2, 3) share 7; (0, 2) apart
    assert s["cannot_link_separated"] == pytest.approx(1 / 3) and s["cannot_link_pairs"] == 3


def test_outlier_tracklets_are_one_class_each():
    labels = np.array([0, -1, -1, -1, 0])
    groups = np.array([0, 1, 1, 2, 0])
    assert training_classes(labels, "singleton", groups).tolist() == [0, 1, 1, 2, 0]
    assert training_classes(labels, "singleton").tolist() == [0, 1, 2, 3, 0]


def test_tracklet_means_and_cameras_against_a_loop():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    ids = check_tracklets(rng.integers(0, 7, 40), 40)
    means = tracklet_means(x, ids)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    for t in range(ids.max() + 1):
        m = unit[ids == t].mean(axis=0)
        np.testing.assert_allclose(means[t], m / np.linalg.norm(m), rtol=1e-5, atol=1e-6)
    import torch

    assert isinstance(tracklet_means(torch.from_numpy(x), ids), torch.Tensor)
    cams = np.repeat(np.arange(8), 5)[rng.permutation(40)]
    first = tracklet_cameras(cams, ids)
    for t in range(ids.max() + 1):
        assert first[t] == cams[np.flatnonzero(ids == t)[0]]


def test_mean_encoding_joins_the_tracklets_that_contraction_keeps_apart():
    """A tracklet's crops are near duplicates of each other (a tracker at 5 frames per second):
    each crop's k-reciprocal neighbours are its own tracklet, so the contracted encoding keeps
    every tracklet alone; the tracklets' mean features find the person's other tracklets."""
    rng = np.random.default_rng(7)
    people, per_person, crops, dim = 8, 3, 12, 16
    centres = rng.normal(size=(people, dim)) * 3
    t_pid = np.repeat(np.arange(people), per_person)
    offsets = rng.normal(size=(people * per_person, dim)) * 0.6
    x = np.repeat(centres[t_pid] + offsets, crops, axis=0)
    x += rng.normal(size=x.shape) * 0.02
    tracklets = np.repeat(np.arange(people * per_person), crops)
    pid = t_pid[tracklets]
    opts = dict(eps=0.5, k1=10, k2=3, min_samples=4, refine=False, tracklets=tracklets)
    contract, _ = pseudo_labels_with_stats(x, **opts, tracklet_encoding="contract")
    mean, _ = pseudo_labels_with_stats(x, **opts, tracklet_encoding="mean", tracklet_k1=4)

    def joined(labels):  # share of same-person tracklet pairs that share a cluster
        t_label = labels[::crops]
        same = [
            (a, b) for a, b in itertools.combinations(range(len(t_pid)), 2) if t_pid[a] == t_pid[b]
        ]
        return np.mean([t_label[a] >= 0 and t_label[a] == t_label[b] for a, b in same])

    assert joined(contract) < 0.2
    assert joined(mean) > 0.8
    # and the mean encoding does not join different people
    t_label = mean[::crops]
    for label in set(t_label[t_label >= 0]):
        assert len(set(t_pid[t_label == label])) == 1
    assert len(set(pid)) == people


def test_unknown_tracklet_encoding_is_an_error():
    x, _ = blobs()
    with pytest.raises(Exception, match="tracklet_encoding"):
        pseudo_labels_with_stats(x, tracklets=np.arange(len(x)), tracklet_encoding="median")
