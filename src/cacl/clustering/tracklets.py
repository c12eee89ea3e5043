"""Tracklet-aware pseudo labels: what a tracker knows, as constraints on the clustering.

Two constraints (docs/method.md, "Tracklets"):

- **must-link**: all crops of one tracklet get one label (or are all outliers). The clustering
  runs on tracklets, not crops: the k-reciprocal encoding ``V`` of the crops (rows: distributions
  over neighbours, summing to 1) is contracted to tracklets, ``V_T = P^T V A`` with ``A`` the
  crop -> tracklet indicator and ``P = A`` divided by the tracklet sizes (a tracklet's row is the
  mean of its crops' rows, its columns the sums of its crops' columns; rows still sum to 1). The
  Jaccard distance of ``V_T`` compares where two tracklets' crops find their neighbours, in the
  same units as the crops' distance. DBSCAN on it weighs each tracklet by its number of crops, so
  ``min_samples`` keeps counting crops. ``V_T`` has at most as many entries as ``V``: it stays
  sparse and scales as the crops' pseudo labels do.
  That is ``tracklet_encoding="contract"``. On the synthetic site it never joins tracklets of two
  cameras (a tracklet's crops are each other's nearest neighbours, so ``V_T`` keeps most of its
  mass on its own column and every other tracklet is far): the default is therefore
  ``tracklet_encoding="mean"``, the tracklet representation of TAUDL (ECCV 2018) and UTAL
  (TPAMI 2019): one feature per tracklet, the mean of its crops' features re-normalised, and the
  k-reciprocal encoding of the tracklets with their own ``k1``/``k2`` (fewer rows per person
  than crops). Both weigh a tracklet by its crops in DBSCAN.
- **cannot-link**: two tracklets of one camera whose time spans overlap are two people. Their
  entries are removed from the tracklet graph before DBSCAN (no direct edge), and a cluster that
  still holds such a pair through others (DBSCAN joins by chains) gives up, round by round, the
  tracklet with the most such pairs in it (ties: the weaker similarity to the rest of the cluster,
  then the smaller), which becomes an outlier, until no cluster holds a pair (the repair step of
  COP-style constrained clustering). The pairs come from a sort of the time spans per camera:
  O(T log T + pairs).

:func:`constraint_stats` measures both on any labels (with or without the constraints): the share
of tracklets that a labelling breaks, and the share of cannot-link pairs it keeps apart.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from cacl.errors import CaclError


class Tracklets(NamedTuple):
    """The tracklets of a training set: ``ids`` (0..T-1 per crop), the cannot-link ``pairs``
    (``(P, 2)`` tracklet ids) and ``times`` (each crop's time on its camera's clock, NaN:
    unknown; they order a tracklet's crops); ``boxes``: ``(N, 5)`` frame, left, top, width,
    height of each crop (NaN: unknown; :mod:`cacl.clustering.crossings`), or None;
    ``crossings``: the mask of the crossing crops (:mod:`cacl.clustering.crossings`), found once
    before training as they do not depend on the features, or None."""

    ids: np.ndarray
    pairs: np.ndarray
    times: np.ndarray
    boxes: np.ndarray | None = None
    crossings: np.ndarray | None = None


#: ``cluster.constraints`` values: the must-link alone, or must-link and cannot-link.
CONSTRAINTS = ("must_link", "both")
#: How tracklets are clustered: their crops' encoding contracted, or their mean features encoded.
TRACKLET_ENCODINGS = ("mean", "contract")


def check_tracklets(tracklets: np.ndarray, n: int) -> np.ndarray:
    """``(n,)`` tracklet ids as 0..T-1 (a crop with id -1, no tracklet, gets one of its own)."""
    ids = np.asarray(tracklets, dtype=np.int64).ravel()
    if ids.shape != (n,):
        raise CaclError(f"tracklets: {ids.size} ids for {n} rows")
    lone = ids < 0
    if lone.any():
        ids = ids.copy()
        ids[lone] = ids.max(initial=-1) + 1 + np.arange(int(lone.sum()))
    return np.unique(ids, return_inverse=True)[1].astype(np.int64).ravel()


def membership(ids: np.ndarray) -> sp.csr_matrix:
    """``A``: the ``N x T`` crop -> tracklet indicator (float64)."""
    n, t = ids.size, int(ids.max(initial=-1)) + 1
    return sp.csr_matrix((np.ones(n), (np.arange(n), ids)), shape=(n, t))


def contract_encoding(v: sp.spmatrix, ids: np.ndarray) -> sp.csr_matrix:
    """``V_T = P^T V A``: the encoding of tracklets (see the module's docstring)."""
    a = membership(ids)
    sizes = np.asarray(a.sum(axis=0)).ravel()
    p = sp.csr_matrix(a.multiply(1.0 / sizes[None, :]))
    out = (p.T @ sp.csr_matrix(v, dtype=np.float64) @ a).tocsr()
    out.sort_indices()
    return out.astype(np.float32)


def tracklet_means(features, ids: np.ndarray):
    """``(T, D)``: each tracklet's mean of its rows of ``features`` (L2-normalised first, then
    re-normalised; numpy or torch in, the same kind out, float32)."""
    import torch

    x = torch.as_tensor(features).float()
    x = torch.nn.functional.normalize(x, dim=1)
    index = torch.as_tensor(ids, device=x.device)
    out = torch.zeros(int(ids.max(initial=-1)) + 1, x.shape[1], device=x.device)
    out.index_add_(0, index, x)
    out = torch.nn.functional.normalize(out, dim=1)
    return out if isinstance(features, torch.Tensor) else out.cpu().numpy()


def tracklet_cameras(cameras: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """``(T,)`` camera of every tracklet (that of its first row: a tracklet is one camera's)."""
    out = np.zeros(int(ids.max(initial=-1)) + 1, dtype=np.int64)
    out[ids[::-1]] = np.asarray(cameras, dtype=np.int64)[::-1]
    return out


def spans(ids: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last time of every tracklet (NaN where no crop has a time)."""
    t = int(ids.max(initial=-1)) + 1
    times = np.asarray(times, dtype=np.float64)
    known = np.isfinite(times)
    first = np.full(t, np.inf)
    last = np.full(t, -np.inf)
    np.minimum.at(first, ids[known], times[known])
    np.maximum.at(last, ids[known], times[known])
    missing = ~np.isfinite(first)
    first[missing], last[missing] = np.nan, np.nan
    return first, last


def cannot_link_pairs(ids: np.ndarray, cameras: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``(P, 2)`` tracklet pairs ``a < b`` of one camera whose ``[first, last]`` time spans
    overlap (a shared instant; touching ends count). Tracklets without times take part in none."""
    first, last = spans(ids, times)
    t = first.size
    camera = np.zeros(t, dtype=np.int64)
    camera[ids] = np.asarray(cameras, dtype=np.int64)
    known = np.flatnonzero(np.isfinite(first))
    order = known[np.lexsort((first[known], camera[known]))]
    out = []
    for cam in np.unique(camera[order]):
        members = order[camera[order] == cam]
        start, end = first[members], last[members]
        # tracklets starting (in order) after i and no later than i's end overlap i
        stop = np.searchsorted(start, end, side="right")
        count = stop - np.arange(members.size) - 1
        i = np.repeat(np.arange(members.size), count)
        offsets = np.arange(i.size) - np.repeat(np.cumsum(count) - count, count)
        j = i + 1 + offsets
        out.append(np.stack([members[i], members[j]], axis=1))
    pairs = np.concatenate(out) if out else np.zeros((0, 2), dtype=np.int64)
    return np.sort(pairs, axis=1).astype(np.int64)


def drop_pairs(graph: sp.spmatrix, pairs: np.ndarray) -> sp.csr_matrix:
    """``graph`` without the entries of ``pairs`` (both directions)."""
    graph = sp.csr_matrix(graph, copy=True)
    if len(pairs) == 0:
        return graph
    n = graph.shape[0]
    both = np.concatenate([pairs, pairs[:, ::-1]])
    banned = np.unique(both[:, 0] * n + both[:, 1])
    coo = graph.tocoo()
    keep = ~np.isin(coo.row.astype(np.int64) * n + coo.col, banned)
    out = sp.csr_matrix((coo.data[keep], (coo.row[keep], coo.col[keep])), shape=graph.shape)
    out.sort_indices()
    return out


def separate(
    labels: np.ndarray, pairs: np.ndarray, graph: sp.spmatrix, sizes: np.ndarray
) -> tuple[np.ndarray, int]:
    """Labels of the tracklets with no cannot-link pair left in a cluster, and how many
    tracklets became outliers for it (see the module's docstring). ``graph``: the tracklets'
    distances (similarity ``1 - d`` on the stored entries); ``sizes``: crops per tracklet."""
    labels = np.asarray(labels, dtype=np.int64).copy()
    sim = sp.csr_matrix(graph, copy=True)
    sim.data = 1.0 - sim.data
    sim.setdiag(0)
    sim.eliminate_zeros()
    ejected = 0
    while len(pairs):
        la, lb = labels[pairs[:, 0]], labels[pairs[:, 1]]
        joined = pairs[(la == lb) & (la >= 0)]
        if len(joined) == 0:
            break
        involved, counts = np.unique(joined, return_counts=True)
        cluster = labels[involved]
        # similarity of each involved tracklet to the rest of its cluster
        rows = sim[involved].tocoo()
        same = labels[rows.col] == cluster[rows.row]
        affinity = np.bincount(rows.row[same], weights=rows.data[same], minlength=involved.size)
        # per cluster: most pairs first, then weakest affinity, then smallest
        order = np.lexsort((sizes[involved], affinity, -counts, cluster))
        first = np.r_[True, np.diff(cluster[order]) != 0]
        out = involved[order[first]]
        labels[out] = -1
        ejected += out.size
    if ejected:
        kept = labels >= 0
        labels[kept] = np.unique(labels[kept], return_inverse=True)[1].ravel()
    return labels, ejected


def constraint_stats(
    labels: np.ndarray, ids: np.ndarray, pairs: np.ndarray | None = None
) -> dict[str, float | int]:
    """How a crop labelling treats the tracklets: ``tracklets_broken``, the share of tracklets of
    2+ crops whose crops do not all share one label (an outlier crop beside clustered ones breaks
    it too); with ``pairs``, ``cannot_link_separated``, the share of cannot-link tracklet pairs
    that share no cluster (1 is right), and the counts."""
    labels = np.asarray(labels, dtype=np.int64)
    t = int(ids.max(initial=-1)) + 1
    sizes = np.bincount(ids, minlength=t)
    first = np.full(t, np.iinfo(np.int64).max)
    np.minimum.at(first, ids, labels)
    last = np.full(t, np.iinfo(np.int64).min)
    np.maximum.at(last, ids, labels)
    multi = sizes >= 2
    broken = multi & (first != last)
    out: dict[str, float | int] = {
        "tracklets": int(t),
        "tracklets_broken": float(broken.sum() / max(1, multi.sum())),
    }
    if pairs is not None:
        out["cannot_link_pairs"] = int(len(pairs))
        if len(pairs):
            # cluster presence per tracklet: T x L (labels >= 0 only)
            clustered = labels >= 0
            presence = sp.csr_matrix(
                (np.ones(int(clustered.sum())), (ids[clustered], labels[clustered])),
                shape=(t, int(labels.max(initial=-1)) + 1),
            )
            presence.data[:] = 1.0
            presence.sum_duplicates()
            presence.data[:] = 1.0
            shared = np.asarray(
                presence[pairs[:, 0]].multiply(presence[pairs[:, 1]]).sum(axis=1)
            ).ravel()
            out["cannot_link_separated"] = float(np.mean(shared == 0))
        else:
            out["cannot_link_separated"] = 1.0
    return out
