"""Torch datasets over images: one transformed image (every feature-extraction pass), or the two
CACL training views.

Images are read by :func:`cacl.data.images.read_rgb`. A file that fails to decode at read time
(it passed the load-time check but is damaged further in) does not stop a run: with
``on_error="blank"`` (training, memory initialisation, evaluation) it is replaced by a black image
and reported once per file; with ``on_error="report"`` (the :class:`cacl.FeatureExtractor`) the
item carries the reason and the caller decides.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from PIL import Image
from torch.utils.data import Dataset

from cacl.data.images import read_rgb
from cacl.data.types import Sample
from cacl.errors import CaclError

log = logging.getLogger(__name__)

ON_ERROR = ("blank", "report")
_BLANK_SIZE = (64, 128)  # (width, height) of the black stand-in image


def read_sample(sample: Sample) -> Image.Image:
    return read_rgb(sample.path)


class _BlankOnError:
    """``read(item)``, or a black image (with one warning per file) when it cannot be read."""

    def __init__(self, read: Callable[[Any], Image.Image]) -> None:
        self.read = read
        self.failed: set[str] = set()

    def __call__(self, item: Any) -> Image.Image:
        try:
            return self.read(item)
        except (CaclError, OSError, ValueError) as exc:
            name = str(getattr(item, "path", item))
            if name not in self.failed:
                self.failed.add(name)
                log.warning("%s; using a black image instead", exc)
            return Image.new("RGB", _BLANK_SIZE)


class ImageDataset(Dataset):
    """Items ``(image_tensor, index, reason)`` for feature extraction; ``reason`` is ``""`` for
    an image that was read, else why it was not (only with ``on_error="report"``).

    Args:
        items: :class:`~cacl.data.types.Sample` objects, or anything ``read`` takes.
        transform: PIL image -> tensor.
        read: item -> RGB PIL image (default: the sample's file through ``read_rgb``); it raises
            :class:`~cacl.errors.CaclError` (or ``OSError`` / ``ValueError``) when it cannot.
        on_error: ``"blank"`` (a black image, warned once per file) or ``"report"``.
    """

    def __init__(
        self,
        items: Sequence[Any],
        transform: Callable,
        *,
        read: Callable[[Any], Image.Image] = read_sample,
        on_error: str = "blank",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        self.items = list(items)
        self.transform = transform
        self.on_error = on_error
        self._read = _BlankOnError(read) if on_error == "blank" else read

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        try:
            image, reason = self._read(self.items[index]), ""
        except (CaclError, OSError, ValueError) as exc:  # on_error == "report"
            image, reason = Image.new("RGB", _BLANK_SIZE), str(exc)
        return self.transform(image), index, reason


class TwoViewDataset(Dataset):
    """Training items: the colour view ``T(I)``, the gray view ``G(T'(I))`` (drawn independently),
    the sample index (the memory row) and the camera."""

    def __init__(
        self, samples: Sequence[Sample], colour_transform: Callable, gray_transform: Callable | None
    ) -> None:
        self.samples = list(samples)
        self.colour_transform = colour_transform
        self.gray_transform = gray_transform
        self._read = _BlankOnError(read_sample)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image = self._read(sample)
        item = {"colour": self.colour_transform(image), "index": index, "camid": sample.camid}
        if self.gray_transform is not None:
            item["gray"] = self.gray_transform(image)
        return item
