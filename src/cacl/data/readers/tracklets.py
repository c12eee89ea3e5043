"""``tracklets.csv`` beside a folder of crops (what ``cacl crops`` writes): the camera, tracklet
and time of every crop.

Columns: ``name,camera,tracklet,frame,time,left,top,width,height,conf`` and optionally
``true_id`` (ground truth, for measuring only). ``name`` is the crop's file name, found in
``<root>/<camera>/`` (or anywhere under the root, by name). A tracklet is one ``(camera,
tracklet)`` pair: the ids of a tracks file are per camera.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from cacl.errors import DatasetError

log = logging.getLogger(__name__)

TRACKLETS_CSV = "tracklets.csv"
REQUIRED = ("name", "camera", "tracklet", "time")
TRACKLET_MODES = ("auto", "off")


@dataclass(frozen=True)
class CropRecord:
    camera: str
    tracklet: int  # 0..T-1 over the whole folder
    time: float  # seconds; NaN when unknown
    frame: int
    true_id: int  # -1 when unknown
    box: tuple[float, float, float, float] | None = None  # left, top, width, height


def read_tracklets_csv(path: Path) -> dict[str, CropRecord]:
    """File name -> record of every row of ``path``; a malformed row is an error with its line."""
    try:
        handle = open(path, newline="", encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read: {exc}") from exc
    records: dict[str, CropRecord] = {}
    keys: dict[tuple[str, str], int] = {}
    with handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{path}: columns {', '.join(missing)} are missing (header: {reader.fieldnames})"
            )
        for number, row in enumerate(reader, start=2):
            try:
                time = float(row["time"]) if row["time"] not in ("", None) else math.nan
                frame = int(row.get("frame") or -1)
                true_id = int(row.get("true_id") or -1)
                box = _box(row)
            except ValueError as exc:
                raise DatasetError(f"{path}, line {number}: {exc}") from None
            key = (row["camera"], row["tracklet"])
            if not row["name"] or not row["camera"] or not row["tracklet"]:
                raise DatasetError(f"{path}, line {number}: name, camera and tracklet are needed")
            if row["name"] in records:
                raise DatasetError(f"{path}, line {number}: {row['name']} is listed twice")
            tracklet = keys.setdefault(key, len(keys))
            records[row["name"]] = CropRecord(row["camera"], tracklet, time, frame, true_id, box)
    return records


def _box(row: dict) -> tuple[float, float, float, float] | None:
    """The crop's box from the ``left,top,width,height`` columns, or None where any is missing
    or empty (a ValueError where one is not a number)."""
    values = [row.get(c) for c in ("left", "top", "width", "height")]
    if any(v in ("", None) for v in values):
        return None
    left, top, width, height = (float(v) for v in values)
    return left, top, width, height


def find_tracklets(root: Path, mode: str) -> dict[str, CropRecord] | None:
    """The records of ``root/tracklets.csv`` when ``mode`` is ``auto`` and it exists."""
    if mode not in TRACKLET_MODES:
        raise DatasetError(f"tracklets must be one of {TRACKLET_MODES}, got {mode!r}")
    path = root / TRACKLETS_CSV
    if mode == "off" or not path.is_file():
        return None
    records = read_tracklets_csv(path)
    log.info(
        "folder: %s: %d crops in %d tracklets over %d cameras",
        path,
        len(records),
        len({r.tracklet for r in records.values()}),
        len({r.camera for r in records.values()}),
    )
    return records
