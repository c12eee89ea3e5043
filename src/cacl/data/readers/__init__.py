"""Dataset readers, registered by name.

>>> from cacl.data import load_dataset
>>> ds = load_dataset("market1501", "/data")          # doctest: +SKIP
>>> print(ds.summary())                               # doctest: +SKIP

``root`` may be the dataset folder itself or its parent (the folder holding
``Market-1501-v15.09.15/``, ``DukeMTMC-reID/``, ``MSMT17_V1/`` ...).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from cacl.data.images import drop_unreadable
from cacl.data.readers.folder import read_folder
from cacl.data.readers.market import read_dukemtmcreid, read_market1501, read_market_test
from cacl.data.readers.msmt17 import read_msmt17
from cacl.data.types import ReidDataset, Sample
from cacl.errors import DatasetError

log = logging.getLogger(__name__)

Reader = Callable[..., ReidDataset]

READERS: dict[str, Reader] = {
    "market1501": read_market1501,
    "dukemtmcreid": read_dukemtmcreid,
    "msmt17": read_msmt17,
    "folder": read_folder,
    # only query/ and bounding_box_test/: an evaluation split (data.eval_root)
    "market-test": read_market_test,
}
ALIASES = {
    "market": "market1501",
    "market-1501": "market1501",
    "duke": "dukemtmcreid",
    "dukemtmc": "dukemtmcreid",
    "dukemtmc-reid": "dukemtmcreid",
    "msmt": "msmt17",
    # The synthetic generator writes the exact Market-1501 layout.
    "synthetic": "market1501",
    "synth": "market1501",
}


def dataset_names() -> list[str]:
    """The registered dataset names."""
    return sorted(READERS)


def register_dataset(name: str, reader: Reader) -> None:
    """Register ``reader(root, **options) -> ReidDataset`` under ``name``."""
    READERS[name.lower()] = reader


def load_dataset(
    name: str, root: str | os.PathLike, *, verify: str = "header", **options
) -> ReidDataset:
    """Read dataset ``name`` under ``root`` into train / query / gallery sample lists.

    Args:
        name: one of :func:`dataset_names` (aliases such as ``market`` or ``synthetic`` work).
        root: the dataset folder or its parent.
        verify: ``header`` (default) opens every image and drops the unreadable ones with one
            warning; ``full`` decodes every pixel too (slow); ``none`` skips the check.
        **options: reader-specific options (e.g. ``camera`` for ``folder``).

    Raises:
        DatasetError: unknown name, missing folder, empty split or a file name that does not parse.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key not in READERS:
        raise DatasetError(
            f"unknown dataset {name!r}; known: {', '.join(dataset_names())} "
            f"(aliases: {', '.join(sorted(ALIASES))})"
        )
    dataset = READERS[key](root, **options)
    for split in ("train", "query", "gallery"):
        samples: list[Sample] = getattr(dataset, split)
        if not samples:
            continue
        kept = drop_unreadable(samples, lambda s: s.path, verify, what=f"{split} images")
        if not kept:
            raise DatasetError(f"no readable image in the {split} split of {dataset.root}")
        setattr(dataset, split, kept)
    return dataset


__all__ = ["READERS", "dataset_names", "load_dataset", "register_dataset"]
