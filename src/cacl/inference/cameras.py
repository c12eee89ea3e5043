"""Camera ids of indexed images, from their names, by the rules of the folder reader.

:func:`gallery_cameras` applies :func:`cacl.data.readers.folder.read_folder`'s ``camera="auto"``
rule to the names of an index built from a folder: the first group of ``cam_regex`` (default
Market's ``_c(\\d+)``) when every file name matches, else the first sub-folder when the images sit
in two or more, else no camera. :func:`camera_from_name` reads one added image's name. Cameras
are kept as the strings found (``"3"`` for ``0001_c3s1_000151_00.jpg``), not renumbered.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import PurePosixPath

from cacl.data.readers.folder import DEFAULT_CAM_REGEX, compile_cam_regex


def camera_from_name(name: str, pattern: re.Pattern[str]) -> str | None:
    """The camera in the file name part of ``name``, or ``None`` when it does not match."""
    match = pattern.search(PurePosixPath(name).name)
    return match.group(1) if match else None


def gallery_cameras(names: Sequence[str], cam_regex: str = DEFAULT_CAM_REGEX) -> list[str | None]:
    """One camera (or ``None``) per name, by the folder reader's ``auto`` rule."""
    pattern = compile_cam_regex(cam_regex)
    found = [camera_from_name(name, pattern) for name in names]
    if found and all(camera is not None for camera in found):
        return found
    parts = [PurePosixPath(name).parts for name in names]
    subfolders = [p[0] if len(p) > 1 else None for p in parts]
    if subfolders and None not in subfolders and len(set(subfolders)) > 1:
        return subfolders
    return [None] * len(names)
