"""Which boxes of a tracks file become crops: clipping, the filters, the per-track sampling.

Pure functions of the boxes and the options; :mod:`cacl.data.site.crops` cuts what they choose.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np

from cacl.data.site.mot import MotTracks
from cacl.errors import CaclError

#: Reasons a box is not cut, as the summary counts them.
LOW_CONF = "confidence below --min-conf"
DEGENERATE = "degenerate (no area inside the frame)"
TOO_SMALL = "shorter than --min-height"
PAST_END = "past the video's end"
NO_TRACK = "detections without a track (id -1)"
DUPLICATE = "a second box of one track in one frame"


@dataclass(frozen=True)
class CropOptions:
    """``every``: keep every N-th box of a track; ``max_per_track``: at most K boxes per track,
    evenly spaced (0: all); ``min_height``: boxes shorter than H pixels after clipping are skipped;
    ``min_conf``: boxes below this confidence are skipped; ``quality``: JPEG quality."""

    every: int = 1
    max_per_track: int = 0
    min_height: int = 0
    min_conf: float = float("-inf")
    quality: int = 95

    def __post_init__(self) -> None:
        if self.every < 1:
            raise CaclError(f"--every must be at least 1, got {self.every}")
        if self.max_per_track < 0:
            raise CaclError(f"--max-per-track must be 0 (all) or more, got {self.max_per_track}")
        if self.min_height < 0:
            raise CaclError(f"--min-height must be 0 or more, got {self.min_height}")
        if not 1 <= self.quality <= 100:
            raise CaclError(f"JPEG quality must be in 1..100, got {self.quality}")

    def record(self) -> dict:
        out = asdict(self)
        if out["min_conf"] == float("-inf"):
            out["min_conf"] = None
        return out


def clip_boxes(box: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(n, 4)`` left, top, width, height -> integer pixel boxes inside the frame.

    The box covers the pixels from ``floor(left)`` to ``ceil(left + width)`` (and likewise
    vertically), cut to ``[0, width] x [0, height]``; a box with no area left has width or height
    0 (never negative).
    """
    box = np.asarray(box, dtype=np.float64).reshape(-1, 4)
    x0 = np.clip(np.floor(box[:, 0]), 0, width)
    y0 = np.clip(np.floor(box[:, 1]), 0, height)
    x1 = np.clip(np.ceil(box[:, 0] + np.maximum(box[:, 2], 0)), 0, width)
    y1 = np.clip(np.ceil(box[:, 1] + np.maximum(box[:, 3], 0)), 0, height)
    degenerate = (box[:, 2] <= 0) | (box[:, 3] <= 0)
    w = np.where(degenerate, 0, x1 - x0)
    h = np.where(degenerate, 0, y1 - y0)
    return np.stack([x0, y0, w, h], axis=1).astype(np.int64)


def spaced(count: int, keep: int) -> np.ndarray:
    """Indices of ``keep`` of ``count`` positions, evenly spaced, first and last included."""
    if keep <= 0 or keep >= count:
        return np.arange(count)
    if keep == 1:
        return np.array([count // 2])
    return np.unique(np.round(np.linspace(0, count - 1, keep)).astype(np.int64))


def select_boxes(
    tracks: MotTracks,
    options: CropOptions,
    width: int,
    height: int,
    length: int | None = None,
) -> tuple[np.ndarray, np.ndarray, Counter]:
    """The rows of ``tracks`` to cut, their clipped boxes, and the count of each skip reason.

    Order: the filters (track, confidence, frame range, area, height), then per track every
    ``every``-th remaining box by frame, then at most ``max_per_track`` of those, evenly spaced.
    Rows come out sorted by frame, then track.
    """
    skipped: Counter = Counter()
    clipped = clip_boxes(tracks.box, width, height)
    keep = np.ones(len(tracks), dtype=bool)

    def drop(mask: np.ndarray, reason: str) -> None:
        hit = mask & keep
        if hit.any():
            skipped[reason] += int(hit.sum())
            keep[hit] = False

    drop(tracks.track < 0, NO_TRACK)
    drop(tracks.conf < options.min_conf, LOW_CONF)
    if length is not None:
        drop(tracks.frame > length, PAST_END)
    drop((clipped[:, 2] < 1) | (clipped[:, 3] < 1), DEGENERATE)
    drop(clipped[:, 3] < options.min_height, TOO_SMALL)
    rows = np.flatnonzero(keep)
    pairs = tracks.track[rows] * (int(tracks.frame.max(initial=0)) + 1) + tracks.frame[rows]
    first = np.zeros(len(rows), dtype=bool)
    first[np.unique(pairs, return_index=True)[1]] = True
    drop(np.isin(np.arange(len(tracks)), rows[~first]), DUPLICATE)

    rows = np.flatnonzero(keep)
    order = rows[np.lexsort((tracks.frame[rows], tracks.track[rows]))]
    chosen = []
    starts = np.flatnonzero(np.r_[True, np.diff(tracks.track[order]) != 0])
    for a, b in zip(starts, np.r_[starts[1:], len(order)], strict=True):
        members = order[a:b][:: options.every]
        chosen.append(members[spaced(len(members), options.max_per_track)])
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    picked = picked[np.lexsort((tracks.track[picked], tracks.frame[picked]))]
    return picked, clipped[picked], skipped
