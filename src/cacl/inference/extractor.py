"""Feature extraction with a trained model: :class:`FeatureExtractor`.

>>> extractor = FeatureExtractor("runs/my-run")  # doctest: +SKIP
>>> features = extractor(["a.jpg", "b.jpg", pil_image, uint8_array])  # (4, D) float32, L2 norm 1

The features are branch 1's ``x`` (the re-ID feature the evaluation uses), computed exactly as
:func:`cacl.evaluation.network.evaluate_network` computes them: the image is read as RGB, passed
through :func:`cacl.data.transforms.test_transform` at the checkpoint's ``data.height`` x
``data.width`` (bicubic resize, ImageNet mean / std) and through the network in eval mode.
Compare two features with the squared Euclidean distance (``2 - 2 cos`` for these unit vectors).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image

from cacl.data.image_dataset import ImageDataset
from cacl.data.images import read_rgb
from cacl.data.transforms import test_transform
from cacl.distributed import resolve_device
from cacl.errors import CaclError, DatasetError
from cacl.evaluation.extract import extract_batches

ImageInput = Union[str, os.PathLike, Image.Image, np.ndarray]  # noqa: UP007 (runtime alias)

PROGRESS_MIN = 512  # with progress=None, a bar is shown for this many images or more


class ImageInputError(CaclError, ValueError):
    """An image given to the extractor is missing, unreadable, or not an image."""


@dataclass
class Extraction:
    """What :meth:`FeatureExtractor.extract_files` returns.

    ``features[i]`` belongs to ``paths[i]``; ``failed`` lists ``(path, reason)`` of the files that
    could not be read and were left out.
    """

    features: torch.Tensor
    paths: list[str]
    failed: list[tuple[str, str]]


def resolve_inference_device(device: torch.device | str | None) -> torch.device:
    """``None`` or ``"auto"``: CUDA when available, else the CPU (:func:`resolve_device`)."""
    return resolve_device("auto" if device is None else str(device), option="device")


def _check_input(item: Any, position: int) -> Any:
    """Validate one input cheaply (no decoding); return it in a picklable normal form."""
    if isinstance(item, str | os.PathLike):
        path = os.fspath(item)
        if not os.path.isfile(path):
            what = "is a folder, not an image file" if os.path.isdir(path) else "not found"
            raise ImageInputError(f"image {what}: {path}")
        return path
    if isinstance(item, Image.Image):
        return item
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise ImageInputError(
                f"image {position}: arrays must be uint8 (0-255 RGB), got dtype {item.dtype}"
            )
        if item.ndim != 3 or item.shape[2] != 3:
            raise ImageInputError(
                f"image {position}: arrays must have shape (height, width, 3) in RGB order, "
                f"got shape {item.shape}"
            )
        if item.shape[0] == 0 or item.shape[1] == 0:
            raise ImageInputError(f"image {position}: empty array of shape {item.shape}")
        return item
    raise ImageInputError(
        f"image {position}: expected a file path, a PIL image or a uint8 (H, W, 3) array, "
        f"got {type(item).__name__}"
    )


def _as_list(images: ImageInput | Sequence[ImageInput]) -> list[Any]:
    """One image, or a sequence of images, or a uint8 (N, H, W, 3) array, as a list of images."""
    if isinstance(images, str | os.PathLike | Image.Image):
        return [images]
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        if images.ndim == 3:
            return [images]
        raise ImageInputError(
            f"arrays must have shape (height, width, 3) or (n, height, width, 3), "
            f"got shape {images.shape}"
        )
    if isinstance(images, Sequence):
        return list(images)
    raise ImageInputError(
        "expected an image (path, PIL image, uint8 array) or a list of them, "
        f"got {type(images).__name__}"
    )


def _to_rgb(item: Any) -> Image.Image:
    """Decode one checked input to an RGB PIL image (files through the one image reader)."""
    if isinstance(item, str):
        try:
            return read_rgb(item)
        except DatasetError as exc:
            raise ImageInputError(str(exc)) from exc
    if isinstance(item, np.ndarray):
        return Image.fromarray(np.ascontiguousarray(item))  # uint8 (H, W, 3): RGB
    return item.convert("RGB")


class FeatureExtractor:
    """Branch-1 re-ID features of images, from a checkpoint file or a run folder.

    Args:
        checkpoint: a checkpoint file (``best.pt`` / ``last.pt``) or a run folder (its
            ``best.pt``, else ``last.pt``).
        device: ``None`` / ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda:0"``, ...
        batch_size: images per forward pass.
        workers: data-loading processes (0: read and transform in this process).
        progress: show a progress bar; ``None`` shows one for 512 images or more.

    Calling the extractor with one image or a list of images (file paths, PIL images, uint8
    ``(H, W, 3)`` RGB arrays, mixed as you like, or one uint8 ``(N, H, W, 3)`` array) returns an
    ``(N, D)`` float32 CPU tensor of L2-normalised features, one row per image in input order
    (``N = 1`` for a single image).
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike,
        device: torch.device | str | None = None,
        batch_size: int = 64,
        workers: int = 0,
        progress: bool | None = None,
    ) -> None:
        from cacl.checkpoints.io import BEST, resolve_checkpoint
        from cacl.checkpoints.network import load_network

        self.device = resolve_inference_device(device)
        self.checkpoint: Path | None = resolve_checkpoint(checkpoint, prefer=BEST)
        network, cfg, self.meta = load_network(self.checkpoint, self.device)
        self.config = cfg
        self._setup(network, cfg.data.height, cfg.data.width, batch_size, workers, progress)

    @classmethod
    def from_network(
        cls,
        network: torch.nn.Module,
        height: int,
        width: int,
        device: torch.device | str | None = None,
        batch_size: int = 64,
        workers: int = 0,
        progress: bool | None = None,
    ) -> FeatureExtractor:
        """An extractor around a network already in memory (it is put in eval mode)."""
        self = cls.__new__(cls)
        self.device = resolve_inference_device(device)
        self.checkpoint, self.config, self.meta = None, None, {}
        self._setup(network.to(self.device).eval(), height, width, batch_size, workers, progress)
        return self

    def _setup(
        self,
        network: torch.nn.Module,
        height: int,
        width: int,
        batch_size: int,
        workers: int,
        progress: bool | None,
    ) -> None:
        if batch_size < 1:
            raise CaclError(f"batch_size must be at least 1, got {batch_size}")
        if workers < 0:
            raise CaclError(f"workers must be 0 or more, got {workers}")
        self.network = network
        self.height, self.width = int(height), int(width)
        self.batch_size, self.workers, self.progress = batch_size, workers, progress
        from cacl.models.network import network_interpolation

        self.transform = test_transform(
            self.height, self.width, interpolation=network_interpolation(network)
        )

    @property
    def feature_dim(self) -> int:
        """``D``, the length of a feature."""
        if not hasattr(self, "_dim"):
            dim = getattr(self.network, "feat_dim", None)
            if dim is None:
                blank = np.zeros((self.height, self.width, 3), dtype=np.uint8)
                dim = self(blank, progress=False).shape[1]
            self._dim = int(dim)
        return self._dim

    def preprocess(self, images: ImageInput | Sequence[ImageInput]) -> torch.Tensor:
        """The ``(N, 3, height, width)`` float32 batch the network (and the exported ONNX model)
        takes: RGB, bicubic resize to the checkpoint's size, ImageNet mean / std, NCHW."""
        items = [_check_input(item, i) for i, item in enumerate(_as_list(images))]
        if not items:
            return torch.empty(0, 3, self.height, self.width)
        return torch.stack([self.transform(_to_rgb(item)) for item in items])

    def __call__(
        self, images: ImageInput | Sequence[ImageInput], progress: bool | None = None
    ) -> torch.Tensor:
        """Features of ``images`` (see the class docstring); any unreadable image is an error."""
        items = [_check_input(item, i) for i, item in enumerate(_as_list(images))]
        features, errors = self._extract(items, progress)
        if errors:
            raise ImageInputError(errors[0][1])
        return features

    def extract_files(
        self, paths: Sequence[str | os.PathLike], progress: bool | None = None
    ) -> Extraction:
        """Features of image files, leaving out (and listing) the files that cannot be read."""
        items = [os.fspath(p) for p in paths]
        features, errors = self._extract(items, progress, skip_errors=True)
        bad = {index for index, _ in errors}
        kept = [path for i, path in enumerate(items) if i not in bad]
        failed = [(items[index], reason) for index, reason in errors]
        return Extraction(features, kept, failed)

    def _extract(
        self, items: list[Any], progress: bool | None, skip_errors: bool = False
    ) -> tuple[torch.Tensor, list[tuple[int, str]]]:
        """Run the network over ``items`` in batches; return the features of the readable items
        and ``(index, reason)`` of the others (extraction stops at the first one unless
        ``skip_errors``)."""
        show = self.progress if progress is None else progress
        show = len(items) >= PROGRESS_MIN if show is None else show
        self.network.eval()  # a CACL network returns branch 1's ``x`` in eval mode only
        features, errors = extract_batches(
            self.network,
            ImageDataset(items, self.transform, read=_to_rgb, on_error="report"),
            device=self.device,
            batch_size=self.batch_size,
            workers=self.workers,
            desc="features",
            progress=show,
            stop_on_error=not skip_errors,
        )
        if features is None:
            features = torch.empty(0, self.feature_dim)
        return features, errors
