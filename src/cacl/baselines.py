"""Hand-crafted retrieval baselines: a colour histogram and a gray gradient-orientation histogram.

They show what colour alone and gray-level shape alone can do on a dataset. On the synthetic set
(:mod:`cacl.data.synth`) the colour histogram should match poorly across cameras, whose colour
casts differ, while the gradient histogram recovers identities from patterns and shapes: the
colour dominance that CACL's gray branch is meant to overcome.

Example::

    >>> from cacl.data import load_dataset
    >>> dataset = load_dataset("market1501", "data/synth")  # doctest: +SKIP
    >>> evaluate_features(dataset, graygrad_features)  # doctest: +SKIP
    {'mAP': 0.2..., 'rank1': ..., 'rank5': ..., 'rank10': ...}
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image

from cacl.data.image_dataset import ImageDataset
from cacl.data.types import ReidDataset, Sample

logger = logging.getLogger(__name__)

#: Images are resized to this size (height, width) before features are computed.
IMAGE_SIZE = (128, 64)

FeatureFunction = Callable[[Sequence[str | os.PathLike[str]]], np.ndarray]


class _AsArray:
    """The baselines' transform: an RGB image converted to ``mode``, resized to
    :data:`IMAGE_SIZE` (bilinear) when it differs, as a ``uint8`` tensor ``(H, W[, C])``."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image: Image.Image) -> torch.Tensor:
        image = image.convert(self.mode)
        if image.size != (IMAGE_SIZE[1], IMAGE_SIZE[0]):
            image = image.resize((IMAGE_SIZE[1], IMAGE_SIZE[0]), Image.BILINEAR)
        return torch.from_numpy(np.array(image))


def _l2_normalise(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def colorhist_array(hsv: np.ndarray, bins: tuple[int, int, int] = (8, 4, 4), stripes: int = 4):
    """Joint HSV histograms of ``(N, H, W, 3)`` ``uint8`` HSV images over horizontal stripes.

    Each stripe's histogram is L1-normalised and square-rooted (Hellinger mapping); the
    concatenation is L2-normalised. Returns ``(N, stripes * prod(bins))`` ``float32``.
    """
    n, h = hsv.shape[0], hsv.shape[1]
    q = [(hsv[..., c].astype(np.int64) * b) >> 8 for c, b in enumerate(bins)]
    code = (q[0] * bins[1] + q[1]) * bins[2] + q[2]  # (N, H, W)
    per_stripe = int(np.prod(bins))
    stripe = (np.arange(h) * stripes // h)[None, :, None]
    code = code + stripe * per_stripe + (np.arange(n) * stripes * per_stripe)[:, None, None]
    hist = np.bincount(code.ravel(), minlength=n * stripes * per_stripe).astype(np.float32)
    hist = hist.reshape(n, stripes, per_stripe)
    hist /= np.maximum(hist.sum(axis=2, keepdims=True), 1.0)
    return _l2_normalise(np.sqrt(hist).reshape(n, -1)).astype(np.float32)


def graygrad_array(gray: np.ndarray, cells: tuple[int, int] = (8, 4), bins: int = 9) -> np.ndarray:
    """Gradient-orientation histograms (HOG-like) of ``(N, H, W)`` gray images.

    Unsigned orientations in ``bins`` bins, weighted by the gradient magnitude and split linearly
    between the two nearest bins, summed over a ``cells`` grid; the whole is square-rooted and
    L2-normalised. Cells are not normalised one by one: that would blow weak gradients of flat
    cells (lighting ramps, compression) up to full weight, and those are camera-specific.
    Returns ``(N, cells[0] * cells[1] * bins)`` ``float32``.
    """
    g = gray.astype(np.float32)
    n, h, w = g.shape
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, :, 1:-1] = g[:, :, 2:] - g[:, :, :-2]
    gy[:, 1:-1, :] = g[:, 2:, :] - g[:, :-2, :]
    mag = np.sqrt(gx * gx + gy * gy)
    pos = (np.arctan2(gy, gx) % np.pi) * (bins / np.pi) - 0.5  # bin centres at integers
    lo = np.floor(pos)
    frac = pos - lo
    lo = lo.astype(np.int64) % bins
    hi = (lo + 1) % bins
    cy = (np.arange(h) * cells[0] // h)[None, :, None]
    cx = (np.arange(w) * cells[1] // w)[None, None, :]
    cell = (np.arange(n)[:, None, None] * cells[0] + cy) * cells[1] + cx  # (N, H, W)
    size = n * cells[0] * cells[1] * bins
    hist = np.bincount((cell * bins + lo).ravel(), (mag * (1 - frac)).ravel(), minlength=size)
    hist += np.bincount((cell * bins + hi).ravel(), (mag * frac).ravel(), minlength=size)
    return _l2_normalise(np.sqrt(hist.reshape(n, -1).astype(np.float32))).astype(np.float32)


def _batched(
    paths: Sequence[str | os.PathLike[str]],
    mode: str,
    fn: Callable[[np.ndarray], np.ndarray],
    batch_size: int,
    desc: str,
    progress: bool,
) -> np.ndarray:
    """``fn`` over the images of ``paths`` in batches, through the one extraction pass (images
    read by :func:`cacl.data.images.read_rgb`; an unreadable file is a black image, warned)."""
    from cacl.evaluation.extract import extract_batches

    items = [Sample(os.fspath(p), -1, 0) for p in paths]
    features, _ = extract_batches(
        lambda batch: torch.from_numpy(fn(batch.numpy())),
        ImageDataset(items, _AsArray(mode)),
        batch_size=batch_size,
        desc=desc,
        progress=progress,
    )
    if features is None:
        raise ValueError("no image paths given")
    return features.numpy()


def colorhist_features(
    paths: Sequence[str | os.PathLike[str]], batch_size: int = 256, progress: bool = False
) -> np.ndarray:
    """Colour-only features: joint HSV histograms over 4 stripes (:func:`colorhist_array`)."""
    return _batched(paths, "HSV", colorhist_array, batch_size, "colorhist", progress)


def graygrad_features(
    paths: Sequence[str | os.PathLike[str]], batch_size: int = 256, progress: bool = False
) -> np.ndarray:
    """Gray-scale shape features: gradient-orientation histograms (:func:`graygrad_array`)."""
    return _batched(paths, "L", graygrad_array, batch_size, "graygrad", progress)


#: The baselines by name, as ``cacl baseline NAME`` calls them.
BASELINES: dict[str, FeatureFunction] = {
    "colorhist": colorhist_features,
    "graygrad": graygrad_features,
}


def evaluate_features(
    dataset: ReidDataset, feature_fn: FeatureFunction, max_rank: int = 50
) -> dict[str, float]:
    """Rank the gallery for every query by the Euclidean distance of ``feature_fn`` features.

    Uses the Market-1501 protocol of :func:`cacl.evaluation.evaluate_rank` and returns
    ``{"mAP", "rank1", "rank5", "rank10"}`` (fractions in [0, 1]).
    """
    from cacl.evaluation import evaluate_rank

    if not dataset.has_test_split:
        from cacl.errors import EvaluationError

        raise EvaluationError(f"{dataset.name} at {dataset.root} has no query / gallery split")
    qf = feature_fn([s.path for s in dataset.query])
    gf = feature_fn([s.path for s in dataset.gallery])
    distmat = (
        np.sum(qf * qf, axis=1, keepdims=True) + np.sum(gf * gf, axis=1)[None, :] - 2.0 * qf @ gf.T
    )
    np.maximum(distmat, 0.0, out=distmat)
    cmc, mean_ap = evaluate_rank(
        distmat,
        np.array([s.pid for s in dataset.query]),
        np.array([s.pid for s in dataset.gallery]),
        np.array([s.camid for s in dataset.query]),
        np.array([s.camid for s in dataset.gallery]),
        max_rank=max_rank,
    )
    result = {"mAP": float(mean_ap)}
    for k in (1, 5, 10):
        result[f"rank{k}"] = float(cmc[min(k, len(cmc)) - 1])
    return result
