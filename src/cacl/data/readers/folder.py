"""Any folder tree of images, for training without identities (``pid = -1`` for every image).

Camera ids come from one of:

- ``camera="regex"``: a regular expression on the file name whose first group is the camera
  (``cam_regex``, default Market's ``_c(\\d+)``); a file that does not match is an error;
- ``camera="subfolder"``: the first sub-folder level under ``root`` (``root/cam1/...``);
- ``camera="none"``: one camera for everything;
- ``camera="auto"`` (default): ``regex`` when every file name matches ``cam_regex``, else
  ``subfolder`` when the images sit in two or more first-level sub-folders, else ``none``.

Camera values are renumbered 0..C-1 in sorted order (numerically when they are numbers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from pathlib import Path

import numpy as np

from cacl.data.images import list_images
from cacl.data.readers.tracklets import CropRecord, find_tracklets
from cacl.data.types import ReidDataset, Sample, Sighting
from cacl.errors import DatasetError

log = logging.getLogger(__name__)

CAMERA_MODES = ("auto", "regex", "subfolder", "none")
DEFAULT_CAM_REGEX = r"_c(\d+)"


def _sort_key(value: str) -> tuple[int, int | str]:
    return (0, int(value)) if value.isdigit() else (1, value)


def _renumber(raw: list[str]) -> list[int]:
    index = {value: i for i, value in enumerate(sorted(set(raw), key=_sort_key))}
    return [index[value] for value in raw]


def compile_cam_regex(cam_regex: str = DEFAULT_CAM_REGEX, what: str = "") -> re.Pattern:
    """``cam_regex`` compiled; a :class:`DatasetError` (its message starting with ``what:``
    when given) when it is not a regular expression or has no group to capture the camera."""
    where = f"{what}: " if what else ""
    try:
        pattern = re.compile(cam_regex)
    except re.error as exc:
        raise DatasetError(f"{where}invalid cam_regex {cam_regex!r}: {exc}") from exc
    if pattern.groups < 1:
        raise DatasetError(f"{where}cam_regex {cam_regex!r} needs a group capturing the camera")
    return pattern


def read_folder(
    root: str | os.PathLike,
    *,
    camera: str = "auto",
    cam_regex: str = DEFAULT_CAM_REGEX,
    tracklets: str = "auto",
) -> ReidDataset:
    """Read every image under ``root`` (recursively) as an unlabelled training set.

    With ``tracklets="auto"`` and a ``tracklets.csv`` in ``root`` (``cacl crops``), the cameras
    come from its ``camera`` column and every image gets its :class:`Sighting` (tracklet and
    time); the ground truth of its ``true_id`` column, where present, becomes the image's ``pid``
    (for measuring the pseudo labels: the training never reads it).
    """
    if camera not in CAMERA_MODES:
        raise DatasetError(f"folder: camera must be one of {CAMERA_MODES}, got {camera!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"folder: not a folder: {root}")
    paths = list_images(root, recursive=True)
    if not paths:
        raise DatasetError(f"folder: no image files under {root}")
    pattern = compile_cam_regex(cam_regex, "folder")
    records = find_tracklets(root, tracklets)
    if records is not None:
        return _with_tracklets(root, paths, records)

    subfolders = [
        p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None for p in paths
    ]
    if camera == "auto":
        if all(pattern.search(p.name) for p in paths):
            camera = "regex"
        elif None not in subfolders and len(set(subfolders)) > 1:
            camera = "subfolder"
        else:
            camera = "none"
        log.info(
            "folder: camera ids from %s",
            {
                "regex": f"file names ({cam_regex})",
                "subfolder": "first-level sub-folders",
                "none": "nowhere: one camera",
            }[camera],
        )
    if camera == "regex":
        raw = []
        for p in paths:
            match = pattern.search(p.name)
            if match is None:
                raise DatasetError(
                    f"folder: file name {p} does not match cam_regex {cam_regex!r}; fix the regex "
                    "or use camera=subfolder / camera=none"
                )
            raw.append(match.group(1))
    elif camera == "subfolder":
        stray = [p for p, sub in zip(paths, subfolders) if sub is None]
        if stray:
            raise DatasetError(
                f"folder: camera=subfolder needs every image inside a first-level sub-folder, "
                f"but {len(stray)} lie directly in {root}, e.g. {stray[0]}"
            )
        raw = [str(sub) for sub in subfolders]
    else:
        raw = ["0"] * len(paths)
    camids = _renumber(raw)
    train = [Sample(str(p), -1, c) for p, c in zip(paths, camids)]
    return ReidDataset("folder", root, train)


def _with_tracklets(root: Path, paths: list[Path], records: dict[str, CropRecord]) -> ReidDataset:
    """The images listed in ``tracklets.csv``; images it does not list are left out (logged)."""
    listed = [p for p in paths if p.name in records]
    if not listed:
        raise DatasetError(
            f"folder: none of the {len(paths)} images under {root} is listed in tracklets.csv; "
            "give data.tracklets=off to read the folder without it"
        )
    if len(listed) < len(paths):
        log.warning(
            "folder: %d images are not in tracklets.csv and are left out, e.g. %s",
            len(paths) - len(listed),
            next(p for p in paths if p.name not in records),
        )
    if len(listed) < len(records):
        log.warning(
            "folder: %d rows of tracklets.csv have no image (left out)", len(records) - len(listed)
        )
    rows = [records[p.name] for p in listed]
    camids = _renumber([r.camera for r in rows])
    _, tracklet = np.unique([r.tracklet for r in rows], return_inverse=True)
    train = [Sample(str(p), r.true_id, c) for p, r, c in zip(listed, rows, camids, strict=True)]
    sightings = {
        s.path: Sighting(int(t), r.time, r.frame, r.box)
        for s, r, t in zip(train, rows, tracklet, strict=True)
    }
    clock = "site" if all(math.isfinite(r.time) for r in rows) else "none"
    summary = root / "crops.json"
    if summary.is_file():
        try:
            clock = json.loads(summary.read_text()).get("clock", clock)
        except (OSError, ValueError):
            log.warning(
                "folder: %s does not read as JSON; the clock is taken as %s", summary, clock
            )
    return ReidDataset("folder", root, train, sightings=sightings, clock=clock)
