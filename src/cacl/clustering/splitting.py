"""Splitting tracklets at likely identity switches (``cluster.split=on``; docs/method.md,
"Tracklets").

A tracker that swaps two people's ids where they cross leaves tracklets that hold one person and
then another; the must-link constraint then glues two people into one class. TMC ("A Free Lunch
to Person Re-identification", arXiv 2204.00891) first cuts such tracks, then lets the clustering
join the pieces again. Here, every epoch and from the tracker's tracklets again:

- the crops of a tracklet are put in time order, and the cut that best divides them into a
  before and an after is found by binary segmentation: the position ``c`` (at least
  ``min_side`` crops on either side) that maximises Ward's criterion
  ``c (n - c) / n * |mean(x_1..x_c) - mean(x_c+1..x_n)|^2`` on the L2-normalised features;
- the cut is made when the cosine distance of the two sides' mean features exceeds
  ``ratio`` times the median distance between the mean features of two different tracklets of
  one camera (sampled pairs: nearly always two people, seen under the same camera's look), so
  the threshold follows the features from epoch to epoch and needs no tuning per site;
- the pieces are split again in the same way, round by round, until no cut passes.

The pieces then are the tracklets of the constraints: each is must-linked, and two pieces of one
camera that overlap in time are cannot-linked (the two pieces of one tracklet never overlap, so
the clustering may join them again). It costs one pass over the features per round, in chunks of
rows: linear in the crops, like the rest of the pseudo labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cacl.clustering.tracklets import tracklet_cameras, tracklet_means
from cacl.errors import CaclError

#: Rows per chunk of the cut search (float64 cumulative sums of ``chunk x D``).
CHUNK_ROWS = 8192


def time_order(ids: np.ndarray, times: np.ndarray | None) -> np.ndarray:
    """Row order by tracklet, then time (unknown times last), then row."""
    n = ids.size
    key = np.zeros(n) if times is None else np.nan_to_num(np.asarray(times, float), nan=np.inf)
    return np.lexsort((np.arange(n), key, ids))


def negative_distance(
    features: torch.Tensor,
    ids: np.ndarray,
    cameras: np.ndarray,
    min_crops: int,
    pairs: int = 20000,
    seed: int = 0,
) -> float | None:
    """Median cosine distance between the mean features of two different tracklets of one camera
    (tracklets of ``min_crops`` crops or more; up to ``pairs`` sampled pairs), or None when no
    camera has two such tracklets."""
    sizes = np.bincount(ids)
    means = tracklet_means(features, ids)
    cams = tracklet_cameras(cameras, ids)
    rng = np.random.default_rng(seed)
    a_all, b_all = [], []
    for cam in np.unique(cams):
        members = np.flatnonzero((cams == cam) & (sizes >= min_crops))
        if members.size < 2:
            continue
        count = min(pairs, members.size * (members.size - 1))
        a = rng.integers(0, members.size, count)
        b = (a + rng.integers(1, members.size, count)) % members.size  # b != a
        a_all.append(members[a])
        b_all.append(members[b])
    if not a_all:
        return None
    a, b = np.concatenate(a_all), np.concatenate(b_all)
    a_t = torch.as_tensor(a, device=means.device)
    b_t = torch.as_tensor(b, device=means.device)
    cos = (means[a_t] * means[b_t]).sum(dim=1)
    return float(torch.median(1.0 - cos))


def best_cuts(
    x: torch.Tensor, segments: np.ndarray, min_side: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For rows ``x`` (L2-normalised, sorted so that every segment's rows are contiguous and in
    time order) with segment ids ``segments`` (non-decreasing, 0..S-1): per segment, the last row
    before the best cut (-1: the segment is shorter than ``2 * min_side``, or has no allowed
    position) and the cosine distance of the two sides' means there (0 where no cut).
    ``allowed``: per row, whether a cut may follow it (None: everywhere)."""
    n = segments.size
    count = int(segments[-1]) + 1 if n else 0
    starts = np.searchsorted(segments, np.arange(count))
    ends = np.r_[starts[1:], n]
    cut = np.full(count, -1, dtype=np.int64)
    distance = np.zeros(count)
    chunk_start = 0
    while chunk_start < count:
        # whole segments, up to CHUNK_ROWS rows (a longer segment alone)
        limit = starts[chunk_start] + CHUNK_ROWS
        chunk_end = max(chunk_start + 1, int(np.searchsorted(ends, limit, side="right")))
        chunk_end = min(chunk_end, count)
        lo, hi = int(starts[chunk_start]), int(ends[chunk_end - 1])
        part = None if allowed is None else allowed[lo:hi]
        c, d = _chunk_cuts(x[lo:hi], segments[lo:hi] - chunk_start, min_side, part)
        cut[chunk_start:chunk_end] = np.where(c >= 0, c + lo, -1)
        distance[chunk_start:chunk_end] = d
        chunk_start = chunk_end
    return cut, distance


def _chunk_cuts(
    x: torch.Tensor, seg: np.ndarray, min_side: int, allowed: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`best_cuts` on one chunk of whole segments (ids 0..S-1 within it)."""
    count = int(seg[-1]) + 1
    seg_t = torch.as_tensor(seg, device=x.device)
    starts = torch.as_tensor(np.searchsorted(seg, np.arange(count)), device=x.device)
    sizes = torch.bincount(seg_t, minlength=count)
    xs = x.double()
    total = torch.cumsum(xs, dim=0)
    before = torch.cat([torch.zeros_like(total[:1]), total])[starts]  # sums before each segment
    left = total - before[seg_t]  # sum of the segment's rows up to and including this one
    whole = torch.zeros(count, xs.shape[1], dtype=xs.dtype, device=x.device)
    whole.index_add_(0, seg_t, xs)
    right = whole[seg_t] - left
    c = (torch.arange(seg.size, device=x.device) - starts[seg_t] + 1).double()
    size = sizes[seg_t].double()
    valid = (c >= min_side) & (size - c >= min_side)
    if allowed is not None:
        valid &= torch.as_tensor(allowed, device=x.device)
    gap = left / c[:, None] - right / (size - c).clamp(min=1)[:, None]
    ward = torch.where(valid, c * (size - c) / size * (gap * gap).sum(dim=1), -1.0)
    best = torch.full((count,), -1.0, dtype=ward.dtype, device=x.device)
    best = best.scatter_reduce(0, seg_t, ward, reduce="amax")
    hit = valid & (ward == best[seg_t])
    rows = torch.full((count,), seg.size, dtype=torch.long, device=x.device)
    index = torch.arange(seg.size, device=x.device)
    rows = rows.scatter_reduce(0, seg_t[hit], index[hit], reduce="amin")  # first best row
    found = rows < seg.size
    cut = torch.where(found, rows, -1)
    cos = torch.nn.functional.cosine_similarity(left[rows[found]], right[rows[found]], dim=1)
    distance = torch.zeros(count, dtype=xs.dtype, device=x.device)
    distance[found] = 1.0 - cos
    return cut.cpu().numpy(), distance.cpu().numpy()


def split_tracklets(
    features: Any,
    ids: np.ndarray,
    cameras: np.ndarray,
    times: np.ndarray | None = None,
    ratio: float = 0.5,
    min_side: int = 3,
    max_rounds: int = 8,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Tracklet ids 0..T'-1 of the rows after the cuts (see the module's docstring), and what was
    done (``candidates``: a mask of the rows, e.g. the crossing crops of
    :func:`cacl.clustering.crossings.crossing_crops`; when given, a cut falls only next to one,
    just before or just after it): ``tracklets_split`` (tracklets cut at least once), ``split_pieces`` (pieces added),
    ``split_threshold`` (the cosine distance a cut had to pass; None: no camera has two
    tracklets to measure it on, and nothing is cut)."""
    if not 0 < ratio:
        raise CaclError(f"cluster.split_ratio must be above 0, got {ratio}")
    if min_side < 1:
        raise CaclError(f"cluster.split_min must be 1 or more, got {min_side}")
    ids = np.asarray(ids, dtype=np.int64)
    x = torch.nn.functional.normalize(torch.as_tensor(features).float(), dim=1)
    reference = negative_distance(x, ids, np.asarray(cameras), min_crops=min_side)
    info: dict[str, Any] = {"tracklets_split": 0, "split_pieces": 0, "split_threshold": None}
    if reference is None:
        return ids.copy(), info
    threshold = ratio * reference
    info["split_threshold"] = threshold
    order = time_order(ids, times)
    index = torch.as_tensor(order, device=x.device)
    xs = x[index]
    seg = np.unique(ids[order], return_inverse=True)[1].ravel()
    allowed = None
    if candidates is not None:
        near = np.asarray(candidates, dtype=bool)[order]
        allowed = near | np.r_[near[1:], False]  # the cut after a row, or before one
    for _ in range(max_rounds):
        cut, distance = best_cuts(xs, seg, min_side, allowed)
        chosen = (cut >= 0) & (distance > threshold)
        if not chosen.any():
            break
        # rows after a chosen cut start a new segment: one more boundary per cut
        step = np.zeros(seg.size, dtype=np.int64)
        step[cut[chosen] + 1] = 1
        seg = seg + np.cumsum(step)
    new = np.empty_like(ids)
    new[order] = seg
    pieces = np.unique(np.stack([ids, new], axis=1), axis=0)
    per_tracklet = np.bincount(pieces[:, 0])
    info["tracklets_split"] = int((per_tracklet > 1).sum())
    info["split_pieces"] = int(per_tracklet.sum() - (per_tracklet > 0).sum())
    return new, info


def mixed_share(ids: np.ndarray, true_pids: np.ndarray) -> float:
    """Share of tracklets of 2+ crops that hold crops of 2+ true identities."""
    ids = np.asarray(ids, dtype=np.int64)
    pairs = np.unique(np.stack([ids, np.asarray(true_pids, dtype=np.int64)], axis=1), axis=0)
    people = np.bincount(pairs[:, 0], minlength=int(ids.max(initial=-1)) + 1)
    multi = np.bincount(ids) >= 2
    return float((people[multi] > 1).mean()) if multi.any() else 0.0
