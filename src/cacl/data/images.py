"""Finding image files and checking that they can be read.

A long run must never die on one bad file: :func:`drop_unreadable` checks every image of a split
when a dataset is loaded, reports the bad ones once (count and first few paths) and drops them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from PIL import Image, UnidentifiedImageError

from cacl.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}
)
VERIFY_MODES = ("none", "header", "full")

T = TypeVar("T")


def is_image_file(name: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive); hidden files are not."""
    name = os.fspath(name)
    base = os.path.basename(name)
    return not base.startswith(".") and os.path.splitext(base)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Sorted image files of ``folder`` (non-image files are ignored).

    Raises :class:`DatasetError` when the folder does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"folder not found: {folder}")
    if recursive:
        found: Iterator[Path] = (
            Path(dirpath) / f
            for dirpath, _, files in os.walk(folder, followlinks=True)
            for f in files
        )
    else:
        found = (p for p in folder.iterdir() if p.is_file())
    return sorted(p for p in found if is_image_file(p.name))


def check_image(path: str | os.PathLike, mode: str = "header") -> str | None:
    """Return ``None`` when the image can be read, else a short reason.

    ``header`` opens the file and parses its header (fast: catches empty, truncated-header and
    non-image files); ``full`` decodes every pixel (slow: also catches truncated pixel data).
    """
    try:
        with Image.open(path) as img:
            if mode == "full":
                img.load()
            elif img.width <= 0 or img.height <= 0:
                return "zero-sized image"
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def read_rgb(path: str | os.PathLike) -> Image.Image:
    """The one image reader: ``path`` as 3-channel RGB, or a :class:`DatasetError` that names it.

    Every consumer reads through it (training views, feature extraction, the baselines, the
    extractor's file inputs); what happens on an error is the caller's policy
    (:class:`cacl.data.image_dataset.ImageDataset`).
    """
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}") from exc


def drop_unreadable(
    items: Iterable[T], path_of, mode: str = "header", what: str = "images", show: int = 5
) -> list[T]:
    """Keep the items whose image can be read; warn once about the others.

    ``path_of(item)`` gives the image path of an item. ``mode`` is one of :data:`VERIFY_MODES`.
    """
    if mode not in VERIFY_MODES:
        raise DatasetError(f"verify must be one of {VERIFY_MODES}, got {mode!r}")
    items = list(items)
    if mode == "none":
        return items
    kept, bad = [], []
    for item in items:
        reason = check_image(path_of(item), mode)
        if reason is None:
            kept.append(item)
        else:
            bad.append((path_of(item), reason))
    if bad:
        listing = "\n".join(f"  {p} ({r})" for p, r in bad[:show])
        more = f"\n  ... and {len(bad) - show} more" if len(bad) > show else ""
        log.warning(
            "skipping %d unreadable %s of %d:\n%s%s", len(bad), what, len(items), listing, more
        )
    return kept
