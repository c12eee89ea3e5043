"""Slow, obviously correct dense transcriptions used as references by the clustering tests.

- :func:`dense_jaccard`: docs/method.md "Pseudo labels" step 1, loop by loop, on an N x N matrix;
- :func:`dense_refine`: docs/method.md step 3 on a dense distance matrix, cluster by cluster;
- :func:`dense_re_ranking`: torchreid's ``re_ranking`` (Zhong et al. 2017), on (q+g) x (q+g).
"""

from __future__ import annotations

import numpy as np


def clustered_features(
    n_clusters: int = 20,
    per_cluster: int = 10,
    dim: int = 32,
    noise: float = 0.5,
    outliers: int = 20,
    seed: int = 0,
) -> np.ndarray:
    """Random float32 features: Gaussian clusters plus scattered outliers, shuffled."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_clusters, dim))
    x = np.repeat(centers, per_cluster, axis=0)
    x += noise * rng.standard_normal((n_clusters * per_cluster, dim))
    x = np.concatenate([x, 1.5 * rng.standard_normal((outliers, dim))])
    return x[rng.permutation(len(x))].astype(np.float32)


def densify(dist) -> np.ndarray:
    """A sparse distance matrix as dense, missing entries at distance 1."""
    out = np.ones(dist.shape)
    coo = dist.tocoo()
    out[coo.row, coo.col] = coo.data
    return out


def dense_jaccard(features: np.ndarray, k1: int = 30, k2: int = 6) -> np.ndarray:
    """The k-reciprocal Jaccard distance, N x N, exactly as docs/method.md words it."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    dist = 2.0 - 2.0 * x @ x.T
    ranking = dist.copy()
    np.fill_diagonal(ranking, -np.inf)  # i itself first, even among duplicates
    rank = np.argsort(ranking, axis=1, kind="stable")[:, :k1]  # the k1 nearest, i included

    def reciprocal(i: int, k: int) -> list[int]:
        return [j for j in rank[i, : k + 1] if i in rank[j, : k + 1]]

    half = int(np.around(k1 / 2))
    v = np.zeros((n, n))
    for i in range(n):
        r_i = reciprocal(i, k1)
        expanded = set(r_i)
        for c in r_i:
            r_c = reciprocal(c, half)
            if len(set(r_c) & set(r_i)) > 2 / 3 * len(r_c):
                expanded |= set(r_c)
        members = sorted(expanded)
        weights = np.exp(-dist[i, members])
        v[i, members] = weights / weights.sum()
    if k2 != 1:
        v = np.stack([v[rank[i, :k2]].mean(axis=0) for i in range(n)])
    s = np.stack([np.minimum(v[i][None, :], v).sum(axis=1) for i in range(n)])
    d = 1.0 - s / (2.0 - s)
    return np.maximum(d, 0.0)


def dense_refine(
    dist: np.ndarray, labels: np.ndarray, tight: np.ndarray, ratio: float = 1.0
) -> np.ndarray:
    """docs/method.md step 3 on a dense distance matrix, cluster by cluster, sub-cluster by sub-cluster."""
    out = labels.copy()
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        spread = dist[np.ix_(members, members)].mean()  # D(C), diagonal included
        groups: dict[object, list[int]] = {}
        for i in members:  # C_j = C ∩ T, a tight outlier alone
            key = ("tight", tight[i]) if tight[i] >= 0 else ("alone", i)
            groups.setdefault(key, []).append(i)
        for part in groups.values():
            rest = np.setdiff1d(members, part)
            if rest.size == 0:
                d_part = 0.0
            else:
                d_part = dist[np.ix_(part, rest)].sum() / rest.size**2  # D(C_j | C)
            if not ratio * d_part <= spread:
                out[part] = -1
    kept = out >= 0
    out[kept] = np.unique(out[kept], return_inverse=True)[1]
    return out


def dense_re_ranking(
    q_g_dist: np.ndarray,
    q_q_dist: np.ndarray,
    g_g_dist: np.ndarray,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
) -> np.ndarray:
    """torchreid's ``re_ranking``, transcribed loop by loop (dense (q+g) x (q+g) matrices)."""
    original = np.concatenate(
        [
            np.concatenate([q_q_dist, q_g_dist], axis=1),
            np.concatenate([q_g_dist.T, g_g_dist], axis=1),
        ],
        axis=0,
    )
    original = np.power(original, 2).astype(np.float32)
    original = np.transpose(1.0 * original / np.max(original, axis=0))
    v = np.zeros_like(original).astype(np.float32)
    initial_rank = np.argsort(original).astype(np.int32)
    query_num = q_g_dist.shape[0]
    all_num = original.shape[0]
    half = int(np.around(k1 / 2.0))

    def reciprocal(i: int, k: int) -> np.ndarray:
        forward = initial_rank[i, : k + 1]
        backward = initial_rank[forward, : k + 1]
        return forward[np.where(backward == i)[0]]

    for i in range(all_num):
        r_i = reciprocal(i, k1)
        expanded = r_i
        for c in r_i:
            r_c = reciprocal(c, half)
            if len(np.intersect1d(r_c, r_i)) > 2.0 / 3 * len(r_c):
                expanded = np.append(expanded, r_c)
        expanded = np.unique(expanded)
        weight = np.exp(-original[i, expanded])
        v[i, expanded] = weight / np.sum(weight)
    original = original[:query_num]
    if k2 != 1:
        v = np.stack([np.mean(v[initial_rank[i, :k2], :], axis=0) for i in range(all_num)])
    jaccard = np.zeros_like(original, dtype=np.float32)
    for i in range(query_num):
        s = np.minimum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1 - s / (2.0 - s)
    final = jaccard * (1 - lambda_value) + original * lambda_value
    return final[:query_num, query_num:]


def squared_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``||a_i||^2 + ||b_j||^2 - 2<a_i, b_j>`` in float32, as torchreid computes it."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T


def dense_camera_centered(features: np.ndarray, cameras: np.ndarray) -> np.ndarray:
    """Each row minus its camera's mean row (of the normalised rows), normalised again."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    out = x.copy()
    for cam in np.unique(cameras):
        rows = cameras == cam
        out[rows] -= x[rows].mean(axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def dense_ca_jaccard(
    features: np.ndarray,
    cameras: np.ndarray,
    k1_intra: int = 5,
    k1_inter: int = 20,
    k2_intra: int = 3,
    k2_inter: int = 3,
) -> np.ndarray:
    """CA-Jaccard (CKRNN + CLQE), N x N, as docs/method.md "Beyond the paper" words it."""
    x = np.asarray(features, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    n = len(x)
    dist = 2.0 - 2.0 * x @ x.T
    same = cameras[:, None] == cameras[None, :]
    intra_rank = []
    inter_rank = []
    for i in range(n):
        key = dist[i].copy()
        key[i] = -np.inf  # i itself first on its intra list
        order = np.argsort(key, kind="stable")
        intra_rank.append([j for j in order if same[i, j]])
        inter_rank.append([j for j in order if not same[i, j]])

    def reciprocal(rank: list[list[int]], i: int, k: int) -> list[int]:
        return [j for j in rank[i][: k + 1] if i in rank[j][: k + 1]]

    v = np.zeros((n, n))
    for i in range(n):
        members = reciprocal(intra_rank, i, k1_intra) + reciprocal(inter_rank, i, k1_inter)
        weights = np.exp(-dist[i, members])
        v[i, members] = weights / weights.sum()
    expansion = [intra_rank[i][:k2_intra] + inter_rank[i][:k2_inter] for i in range(n)]
    v = np.stack([v[rows].mean(axis=0) for rows in expansion])
    s = np.stack([np.minimum(v[i][None, :], v).sum(axis=1) for i in range(n)])
    return np.maximum(1.0 - s / (2.0 - s), 0.0)
