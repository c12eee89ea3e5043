"""Embedding uploaded crops with the index's model, one forward pass at a time."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cacl.inference.extractor import FeatureExtractor


class Embedder:
    """Features of PIL images by a :class:`FeatureExtractor`; calls from many threads queue up
    (the network already uses every core for one batch)."""

    def __init__(self, extractor: FeatureExtractor) -> None:
        self.extractor = extractor
        self._lock = threading.Lock()

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        with self._lock:
            return self.extractor(list(images), progress=False).numpy()
