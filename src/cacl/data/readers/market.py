"""Market-1501-style layouts: ``bounding_box_train/``, ``query/``, ``bounding_box_test/``.

Market-1501 names its files ``0002_c1s1_000451_03.jpg`` and DukeMTMC-reID ``0001_c2_f0046182.jpg``:
person id, then ``c`` and the 1-based camera. Junk images (id -1) are dropped; distractors (id 0)
stay in the gallery. The synthetic generator writes this layout too.
"""

from __future__ import annotations

import os
import re

from cacl.data.readers.common import find_dataset_dir, parse_split
from cacl.data.types import ReidDataset

MARKET_STYLE_PATTERN = re.compile(r"^(-?\d+)_c(\d+)")
SPLIT_FOLDERS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def read_market_style(
    root: str | os.PathLike, *, dataset: str, folder_names: tuple[str, ...] = ()
) -> ReidDataset:
    """Read any dataset in the Market-1501 layout found at ``root`` or ``root/<folder_names>``."""
    base = find_dataset_dir(root, folder_names, tuple(SPLIT_FOLDERS.values()), dataset)
    splits = {
        split: parse_split(base / folder, MARKET_STYLE_PATTERN, dataset=dataset)
        for split, folder in SPLIT_FOLDERS.items()
    }
    # Distractors (id 0) belong to the gallery only; none should be trained on or queried.
    train = [s for s in splits["train"] if s.pid > 0]
    query = [s for s in splits["query"] if s.pid > 0]
    return ReidDataset(dataset, base, train, query, splits["gallery"])


def read_market_test(root: str | os.PathLike, *, dataset: str = "eval") -> ReidDataset:
    """Only the test split of a Market-1501 layout (``query/`` and ``bounding_box_test/``, no
    ``bounding_box_train/``): an evaluation split for a run that trains on other data."""
    base = find_dataset_dir(root, (), (SPLIT_FOLDERS["query"], SPLIT_FOLDERS["gallery"]), dataset)
    query, gallery = (
        parse_split(base / SPLIT_FOLDERS[split], MARKET_STYLE_PATTERN, dataset=dataset)
        for split in ("query", "gallery")
    )
    return ReidDataset(dataset, base, [], [s for s in query if s.pid > 0], gallery)


def read_market1501(root: str | os.PathLike) -> ReidDataset:
    """Market-1501 (``Market-1501-v15.09.15/``) or any folder in its layout (synthetic sets)."""
    return read_market_style(
        root,
        dataset="market1501",
        folder_names=("Market-1501-v15.09.15", "Market-1501", "market1501"),
    )


def read_dukemtmcreid(root: str | os.PathLike) -> ReidDataset:
    """DukeMTMC-reID (``DukeMTMC-reID/``)."""
    return read_market_style(
        root,
        dataset="dukemtmcreid",
        folder_names=("DukeMTMC-reID", "dukemtmc-reid", "dukemtmcreid"),
    )
