"""A gallery index of a folder of images, and the extractor that embeds its queries.

:func:`build_folder_index` extracts the features of every image under a folder (recursively;
unreadable files are left out and listed) and indexes them with the names relative to the
folder; the manifest records the checkpoint (path and SHA-256) and the image size, so
:func:`query_extractor` can embed queries with the same model later.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from cacl.inference.extractor import FeatureExtractor
from cacl.inference.index import GalleryIndex, GalleryIndexError, file_sha256

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FolderIndex:
    """The index of a folder, the files left out ``(relative path, reason)`` and timings (s)."""

    index: GalleryIndex
    skipped: list[tuple[str, str]]
    extract_s: float
    build_s: float


def _relative(path: str | os.PathLike, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


def gallery_images(folder: Path, shown: str | os.PathLike | None = None) -> list[Path]:
    """Every image under ``folder`` (recursively); :class:`GalleryIndexError` when the folder is
    missing or holds none (``shown``: how the folder is named in the message)."""
    from cacl.data.images import IMAGE_EXTENSIONS, list_images

    if not folder.is_dir():
        raise GalleryIndexError(f"image folder not found: {shown or folder}")
    paths = list_images(folder, recursive=True)
    if not paths:
        raise GalleryIndexError(
            f"no images under {folder} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    return paths


def build_folder_index(
    extractor: FeatureExtractor,
    images_dir: str | os.PathLike,
    *,
    progress: bool | None = None,
    **build_kwargs: Any,
) -> FolderIndex:
    """Index the features of every image under ``images_dir`` (see :meth:`GalleryIndex.build`
    for ``build_kwargs``: ``kind``, ``threshold``, ``nlist``, ``nprobe``, ...)."""
    root = Path(images_dir).expanduser().resolve()
    paths = gallery_images(root, shown=images_dir)
    start = time.perf_counter()
    extraction = extractor.extract_files(paths, progress=progress)
    extract_s = time.perf_counter() - start
    skipped = [(_relative(p, root), reason) for p, reason in extraction.failed]
    if skipped:
        listing = "\n".join(f"  {name} ({reason})" for name, reason in skipped[:5])
        more = f"\n  ... and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log.warning(
            "skipped %d unreadable images of %d:\n%s%s", len(skipped), len(paths), listing, more
        )
    if not extraction.paths:
        raise GalleryIndexError(f"none of the {len(paths)} images under {root} could be read")
    info: dict[str, Any] = {
        "root": str(root),
        "height": extractor.height,
        "width": extractor.width,
        "skipped": [{"name": name, "reason": reason} for name, reason in skipped],
    }
    if extractor.checkpoint is not None:
        info["checkpoint"] = str(Path(extractor.checkpoint).resolve())
        info["checkpoint_sha256"] = file_sha256(extractor.checkpoint)
    if extractor.config is not None:
        info["model"] = dataclasses.asdict(extractor.config.model)
    start = time.perf_counter()
    names = [_relative(p, root) for p in extraction.paths]
    index = GalleryIndex.build(extraction.features, names, info=info, **build_kwargs)
    return FolderIndex(index, skipped, extract_s, time.perf_counter() - start)


def query_extractor(
    index: GalleryIndex,
    checkpoint: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    batch_size: int = 64,
) -> FeatureExtractor:
    """The extractor that embeds queries for ``index``: its own checkpoint, which must be
    unchanged since the index was built, or ``checkpoint`` (a warning when it differs)."""
    stored = index.info.get("checkpoint")
    if checkpoint is None:
        if stored is None:
            raise GalleryIndexError("the index records no checkpoint; pass one (--checkpoint)")
        if not Path(stored).is_file():
            raise GalleryIndexError(
                f"the index's checkpoint {stored} is gone; pass the model (--checkpoint)"
            )
        if file_sha256(stored) != index.info.get("checkpoint_sha256"):
            raise GalleryIndexError(
                f"the checkpoint {stored} changed since the index was built, so queries would "
                "not be comparable: rebuild the index, or pass --checkpoint to use it anyway"
            )
        checkpoint = stored
    extractor = FeatureExtractor(checkpoint, device=device, batch_size=batch_size)
    if stored is not None and checkpoint != stored:
        if file_sha256(extractor.checkpoint) != index.info.get("checkpoint_sha256"):
            log.warning(
                "%s is not the checkpoint the index was built with (%s)", checkpoint, stored
            )
    size = (index.info.get("height"), index.info.get("width"))
    if None not in size and size != (extractor.height, extractor.width):
        raise GalleryIndexError(
            f"the index was built at {size[0]}x{size[1]} pixels, the checkpoint uses "
            f"{extractor.height}x{extractor.width}"
        )
    if extractor.feature_dim != index.dim:
        raise GalleryIndexError(
            f"the checkpoint gives {extractor.feature_dim}-dimensional features, the index "
            f"holds {index.dim}"
        )
    return extractor
