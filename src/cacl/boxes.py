"""Geometry of ``(left, top, width, height)`` boxes, shared by the synthetic site's tracker
(:mod:`cacl.data.synth.scene`) and the cut at crossings (:mod:`cacl.clustering.crossings`)."""

from __future__ import annotations

import numpy as np


def pair_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of rows of ``(left, top, width, height)`` boxes."""
    x0 = np.maximum(a[:, 0], b[:, 0])
    y0 = np.maximum(a[:, 1], b[:, 1])
    x1 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y1 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
