"""Cutting tracklets where two people's boxes overlap (``cluster.split_crossings=on``;
docs/method.md, "Tracklets").

A tracker swaps two people's ids where their boxes overlap: while one occludes the other, the
detector sees one box where there were two, and the association that follows may pick either
person (occlusion is where trackers lose and re-associate people). The crops of such an
episode hold two people at once, and a tracklet may hold one person before it and the other after.
The cut here needs no features: in each camera and frame, the crops of different tracklets whose
boxes overlap (intersection over union above ``min_iou``; 0, the default, takes any overlap) are
*crossing crops*. Each crossing crop becomes a piece of its own (no must-link: it may show either
person), and the rest of a tracklet is cut into the runs of crops between its crossing crops, in
frame order. The pieces of one tracklet never overlap in time, so the clustering may join them
again; the feature-based cut (:mod:`cacl.clustering.splitting`) then runs on the pieces.

Linear in the crops: one sort by (camera, frame), then the boxes of each frame compared with the
next few of the same frame (``max_per_frame`` boxes at most are compared with each other).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cacl.boxes import pair_iou
from cacl.errors import CaclError

__all__ = ["crossing_crops", "cut_at_crossings", "pair_iou"]


def crossing_crops(
    ids: np.ndarray,
    cameras: np.ndarray,
    boxes: np.ndarray,
    min_iou: float = 0.0,
    max_per_frame: int = 64,
) -> np.ndarray:
    """Mask of the crops whose box overlaps (IoU > ``min_iou``) the box of a crop of another
    tracklet in the same camera and frame. ``boxes``: ``(N, 5)`` frame, left, top, width, height
    (rows with a NaN take part in nothing)."""
    ids, cameras = np.asarray(ids, np.int64), np.asarray(cameras, np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    n = ids.size
    if boxes.shape != (n, 5):
        raise CaclError(f"crossings need (N, 5) boxes for {n} crops, got {boxes.shape}")
    if min_iou < 0 or min_iou >= 1:
        raise CaclError(f"the crossing IoU must lie in [0, 1), got {min_iou}")
    known = np.flatnonzero(np.isfinite(boxes).all(axis=1) & (boxes[:, 3] > 0) & (boxes[:, 4] > 0))
    order = known[np.lexsort((boxes[known, 0], cameras[known]))]
    cam, frame = cameras[order], boxes[order, 0]
    hit = np.zeros(n, dtype=bool)
    for step in range(1, max_per_frame):
        if step >= order.size:
            break
        a, b = order[:-step], order[step:]
        same = (cam[:-step] == cam[step:]) & (frame[:-step] == frame[step:])
        if not same.any():
            break  # no frame holds more than ``step`` boxes
        a, b = a[same], b[same]
        other = ids[a] != ids[b]
        a, b = a[other], b[other]
        overlap = pair_iou(boxes[a, 1:], boxes[b, 1:]) > min_iou
        hit[a[overlap]] = True
        hit[b[overlap]] = True
    return hit


def cut_at_crossings(
    ids: np.ndarray,
    cameras: np.ndarray,
    boxes: np.ndarray,
    min_iou: float = 0.0,
    hit: np.ndarray | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Piece ids 0..P-1 of the crops (see the module's docstring) and what was done:
    ``crossing_crops`` (crops that became pieces of their own), ``crossing_tracklets``
    (tracklets with at least one) and ``crossing_pieces`` (pieces added). ``hit``: the
    :func:`crossing_crops` mask when already known."""
    ids = np.asarray(ids, np.int64)
    boxes = np.asarray(boxes, dtype=np.float64)
    hit = crossing_crops(ids, cameras, boxes, min_iou) if hit is None else np.asarray(hit, bool)
    frames = np.nan_to_num(boxes[:, 0], nan=np.inf)
    order = np.lexsort((np.arange(ids.size), frames, ids))
    tracklet, crossing = ids[order], hit[order]
    # a new piece at every tracklet's start, at every crossing crop and at the crop after one
    start = np.r_[True, tracklet[1:] != tracklet[:-1]]
    start |= crossing
    start[1:] |= crossing[:-1]
    new = np.empty_like(ids)
    new[order] = np.cumsum(start) - 1
    info = {
        "crossing_crops": int(hit.sum()),
        "crossing_tracklets": int(np.unique(ids[hit]).size),
        "crossing_pieces": int(new.max(initial=-1) + 1 - np.unique(ids).size),
    }
    return new, info
