"""Tracks from detections (``det/det.txt``, ids -1), with ByteTrack from Roboflow's ``trackers``.

Not a tracker of our own: :func:`track_detections` feeds each frame's detections, in frame order,
to ``trackers.ByteTrackTracker`` (the maintained successor of ``supervision``'s ByteTrack) and
keeps the boxes it gives an id. Install it with ``pip install 'cacl[track]'``.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from cacl.data.site.mot import MotTracks
from cacl.errors import DatasetError

log = logging.getLogger(__name__)


def _tracker(frame_rate: float):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # supervision's note that OpenCV is missing
            import supervision as sv
            from trackers import ByteTrackTracker
    except ImportError as exc:
        raise DatasetError(
            "the tracks file holds detections only (every id is -1): making tracks from them "
            "needs a tracker: pip install 'cacl[track]' (Roboflow's trackers: ByteTrack), or give "
            "the tracker's output as tracks.txt"
        ) from exc
    return sv, ByteTrackTracker(frame_rate=frame_rate)


def track_detections(detections: MotTracks, frame_rate: float) -> MotTracks:
    """The detections that ByteTrack assigns to a track, with its ids."""
    sv, tracker = _tracker(frame_rate)
    order = np.argsort(detections.frame, kind="stable")
    frames = detections.frame[order]
    cuts = np.flatnonzero(np.r_[True, np.diff(frames) != 0, True])
    rows, ids = [], []
    previous = None
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        frame = int(frames[a])
        # frames without a detection still advance the tracker's clock
        for _ in range(frame - previous - 1 if previous is not None else 0):
            tracker.update(sv.Detections.empty())
        previous = frame
        index = order[a:b]
        box = detections.box[index]
        found = sv.Detections(
            xyxy=np.c_[box[:, :2], box[:, :2] + box[:, 2:]].astype(np.float32),
            confidence=detections.conf[index].astype(np.float32),
            data={"row": index},
        )
        tracked = tracker.update(found)
        keep = np.asarray(tracked.tracker_id) >= 0
        rows.append(np.asarray(tracked.data["row"])[keep])
        ids.append(np.asarray(tracked.tracker_id)[keep])
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    track = np.concatenate(ids).astype(np.int64) if ids else np.zeros(0, dtype=np.int64)
    log.info(
        "ByteTrack: %d of %d detections in %d tracks",
        len(row),
        len(detections),
        len(np.unique(track)),
    )
    return MotTracks(
        path=detections.path,
        variant=detections.variant,
        separator=detections.separator,
        frame=detections.frame[row],
        track=track,
        box=detections.box[row],
        conf=detections.conf[row],
        dropped={**detections.dropped, "not tracked by ByteTrack": len(detections) - len(row)},
    )
