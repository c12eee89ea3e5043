"""Torch datasets over sample lists: one transformed image, or the two CACL training views.

A file that fails to decode at read time (it passed the load-time check but is damaged further
in) does not stop a run: it is replaced by a black image and reported once per file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset

from cacl.data.types import Sample
from cacl.errors import DatasetError

log = logging.getLogger(__name__)


class _SafeReader:
    def __init__(self) -> None:
        self.failed: set[str] = set()

    def __call__(self, path: str) -> Image.Image:
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, ValueError, SyntaxError, DatasetError) as exc:
            if path not in self.failed:
                self.failed.add(path)
                log.warning("cannot read %s (%s); using a black image instead", path, exc)
            return Image.new("RGB", (64, 128))


class ImageDataset(Dataset):
    """Items ``(image_tensor, index)`` for feature extraction."""

    def __init__(self, samples: Sequence[Sample], transform: Callable) -> None:
        self.samples = list(samples)
        self.transform = transform
        self._read = _SafeReader()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        return self.transform(self._read(self.samples[index].path)), index


class TwoViewDataset(Dataset):
    """Training items: the colour view ``T(I)``, the gray view ``G(T'(I))`` (drawn independently),
    the sample index (the memory row) and the camera."""

    def __init__(
        self, samples: Sequence[Sample], colour_transform: Callable, gray_transform: Callable | None
    ) -> None:
        self.samples = list(samples)
        self.colour_transform = colour_transform
        self.gray_transform = gray_transform
        self._read = _SafeReader()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = self._read(sample.path)
        item = {"colour": self.colour_transform(image), "index": index, "camid": sample.camid}
        if self.gray_transform is not None:
            item["gray"] = self.gray_transform(image)
        return item
