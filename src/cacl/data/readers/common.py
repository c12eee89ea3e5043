"""Helpers shared by the readers: locating the dataset folder and parsing split folders."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from cacl.data.images import list_images
from cacl.data.types import Sample
from cacl.errors import DatasetError

JUNK_PID = -1


def find_dataset_dir(
    root: str | os.PathLike, folder_names: Sequence[str], required: Sequence[str], dataset: str
) -> Path:
    """Return the folder holding all ``required`` entries: ``root`` itself or ``root/<name>``.

    Raises a :class:`DatasetError` listing every place that was looked at.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(f"{dataset}: root folder not found: {root}")
    candidates = [root] + [root / name for name in folder_names]
    for candidate in candidates:
        if all((candidate / entry).exists() for entry in required):
            return candidate
    looked = ", ".join(str(c) for c in candidates)
    raise DatasetError(
        f"{dataset}: expected a folder containing {', '.join(required)}; looked in: {looked}"
    )


def parse_split(
    folder: Path,
    pattern: re.Pattern[str],
    *,
    keep_junk: bool = False,
    keep_distractors: bool = True,
    dataset: str,
) -> list[Sample]:
    """Parse every image of a Market-style split folder.

    ``pattern`` must have two groups: the person id (``-1`` = junk) and the 1-based camera.
    Camera ids are returned 0-based. Raises :class:`DatasetError` for a name that does not match,
    a camera number below 1, or a split without images.
    """
    paths = list_images(folder)
    if not paths:
        raise DatasetError(f"{dataset}: no image files in {folder}")
    samples = []
    for path in paths:
        match = pattern.search(path.name)
        if match is None:
            raise DatasetError(
                f"{dataset}: file name {path} does not match the expected pattern "
                f"{pattern.pattern!r} (e.g. 0002_c1s1_000451_03.jpg)"
            )
        pid, cam = int(match.group(1)), int(match.group(2))
        if pid == JUNK_PID and not keep_junk:
            continue
        if pid == 0 and not keep_distractors:
            continue
        if cam < 1:
            raise DatasetError(f"{dataset}: camera numbers start at 1 in file names: {path}")
        samples.append(Sample(str(path), pid, cam - 1))
    if not samples:
        raise DatasetError(f"{dataset}: every image in {folder} is junk (id -1)")
    return samples
