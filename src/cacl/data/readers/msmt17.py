"""MSMT17, from its V1/V2 list files or from the Market-style repack.

List form (``MSMT17_V1/`` or ``MSMT17_V2/``): image folders ``train/`` and ``test/`` (``mask_train_v2/``
and ``mask_test_v2/`` in V2) and ``list_{train,val,query,gallery}.txt`` with lines
``relative/path.jpg pid``; the camera is the third ``_``-field of the file name, 1-based
(``0000_000_01_0303morning_0015_0.jpg`` is camera 1). For unsupervised training the training set is
list_train + list_val (32,621 images).

Repack form: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` with Market-style names.
"""

from __future__ import annotations

import os
from pathlib import Path

from cacl.data.readers.common import find_dataset_dir
from cacl.data.readers.market import SPLIT_FOLDERS, read_market_style
from cacl.data.types import ReidDataset, Sample
from cacl.errors import DatasetError

FOLDER_NAMES = ("MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17")
LIST_FILES = ("list_train.txt", "list_val.txt", "list_query.txt", "list_gallery.txt")
IMAGE_DIRS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}


def _has_list_form(path: Path) -> bool:
    return all((path / name).is_file() for name in LIST_FILES)


def _has_repack_form(path: Path) -> bool:
    return all((path / folder).is_dir() for folder in SPLIT_FOLDERS.values())


def read_msmt17(root: str | os.PathLike) -> ReidDataset:
    """Read MSMT17 in either form (the list form wins when both are present)."""
    root = Path(root).expanduser()
    for candidate in [root] + [root / name for name in FOLDER_NAMES]:
        if _has_list_form(candidate):
            return _read_list_form(candidate)
        if _has_repack_form(candidate):
            return read_market_style(candidate, dataset="msmt17")
    # Neither form found: let find_dataset_dir produce the message listing where we looked.
    find_dataset_dir(
        root, FOLDER_NAMES, LIST_FILES, "msmt17 (list files or bounding_box_* folders)"
    )
    raise AssertionError("unreachable")


def _image_dir(base: Path, kind: str) -> Path:
    for name in IMAGE_DIRS[kind]:
        if (base / name).is_dir():
            return base / name
    raise DatasetError(
        f"msmt17: image folder not found: expected one of {', '.join(IMAGE_DIRS[kind])} in {base}"
    )


def _camera_from_name(name: str, list_file: Path, lineno: int) -> int:
    fields = os.path.basename(name).split("_")
    try:
        cam = int(fields[2])
    except (IndexError, ValueError):
        raise DatasetError(
            f"msmt17: {list_file}:{lineno}: cannot read the camera from {name!r}; expected the third "
            "'_'-separated field to be the 1-based camera (e.g. 0000_000_01_0303morning_0015_0.jpg)"
        ) from None
    if cam < 1:
        raise DatasetError(f"msmt17: {list_file}:{lineno}: camera numbers start at 1: {name!r}")
    return cam - 1


def _read_list(list_file: Path, image_dir: Path, base: Path) -> list[Sample]:
    samples = []
    with open(list_file, encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DatasetError(
                    f"msmt17: {list_file}:{lineno}: expected 'relative/path.jpg pid', got {line.strip()!r}"
                )
            rel, pid = parts[0], int(parts[1])
            # Paths are relative to the image folder (official lists) or to the dataset folder.
            path = image_dir / rel
            if not path.exists() and (base / rel).exists():
                path = base / rel
            samples.append(Sample(str(path), pid, _camera_from_name(rel, list_file, lineno)))
    if not samples:
        raise DatasetError(f"msmt17: {list_file} lists no image")
    return samples


def _read_list_form(base: Path) -> ReidDataset:
    train_dir, test_dir = _image_dir(base, "train"), _image_dir(base, "test")
    train = _read_list(base / "list_train.txt", train_dir, base)
    train += _read_list(base / "list_val.txt", train_dir, base)
    query = _read_list(base / "list_query.txt", test_dir, base)
    gallery = _read_list(base / "list_gallery.txt", test_dir, base)
    listed = train + query + gallery
    missing = [s.path for s in listed if not os.path.exists(s.path)]
    # A few missing files are dropped later with the unreadable ones; many mean a wrong folder.
    if len(missing) > 0.1 * len(listed):
        raise DatasetError(
            f"msmt17: {len(missing)} listed images do not exist, e.g. {missing[0]} "
            f"(list paths are read relative to {train_dir.name}/ or {test_dir.name}/ and to {base})"
        )
    return ReidDataset("msmt17", base, train, query, gallery)
