"""The ground-truth identity of tracker boxes, where a camera has ``gt/gt.txt`` beside them.

For measuring pseudo labels only (ARI, the purity of tracklets): a box takes the identity of the
ground-truth box of the same frame that overlaps it most, when their IoU is at least
:data:`MIN_IOU`; else -1. Greedy per frame, best pairs first, each ground-truth box used once.
"""

from __future__ import annotations

import numpy as np

from cacl.data.site.layout import CameraSource
from cacl.data.site.mot import MotTracks, read_mot

MIN_IOU = 0.5


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` IoU of left, top, width, height boxes."""
    a, b = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y1 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def assign(boxes: np.ndarray, gt_boxes: np.ndarray, gt_ids: np.ndarray) -> np.ndarray:
    """Greedy one-to-one assignment of ``boxes`` to ground-truth boxes of one frame."""
    out = np.full(len(boxes), -1, dtype=np.int64)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return out
    overlap = iou(boxes, gt_boxes)
    order = np.argsort(-overlap, axis=None)
    used_box, used_gt = set(), set()
    for flat in order:
        i, j = divmod(int(flat), len(gt_boxes))
        if overlap[i, j] < MIN_IOU:
            break
        if i in used_box or j in used_gt:
            continue
        used_box.add(i)
        used_gt.add(j)
        out[i] = gt_ids[j]
    return out


def match_truth(camera: CameraSource, tracks: MotTracks, rows: np.ndarray) -> np.ndarray | None:
    """True identity of each of ``tracks``' ``rows`` (-1: none), or None when the camera has no
    ground truth apart from the tracks themselves."""
    gt_path = camera.folder / "gt" / "gt.txt"
    if not gt_path.is_file() or gt_path.resolve() == tracks.path.resolve():
        return None
    gt = read_mot(gt_path)
    out = np.full(len(rows), -1, dtype=np.int64)
    frames = tracks.frame[rows]
    gt_order = np.argsort(gt.frame, kind="stable")
    gt_frames = gt.frame[gt_order]
    order = np.argsort(tracks.frame, kind="stable")
    sorted_frames = tracks.frame[order]
    picked = np.argsort(frames, kind="stable")
    # Every tracker box of a frame against all boxes of that frame (not only the picked ones), so
    # that a picked box cannot take a ground-truth box that an unpicked one overlaps better.
    cuts = np.flatnonzero(np.r_[True, np.diff(frames[picked]) != 0, True])
    for c0, c1 in zip(cuts[:-1], cuts[1:], strict=True):
        frame = frames[picked[c0]]
        a, b = np.searchsorted(gt_frames, [frame, frame + 1])
        t0, t1 = np.searchsorted(sorted_frames, [frame, frame + 1])
        in_frame = order[t0:t1]
        ids = assign(tracks.box[in_frame], gt.box[gt_order[a:b]], gt.track[gt_order[a:b]])
        lookup = dict(zip(in_frame.tolist(), ids.tolist(), strict=True))
        for i in picked[c0:c1]:
            out[i] = lookup[int(rows[i])]
    return out
