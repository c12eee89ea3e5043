"""st-ReID's logistic fusion of an appearance similarity and a spatio-temporal probability."""

from __future__ import annotations

import numpy as np

#: st-ReID's constants: ``1 / (1 + lambda e^(-gamma x))`` for both cues.
GAMMA = 5.0
LAMBDA_APPEARANCE = 1.0
LAMBDA_TIME = 2.0


def fuse(similarity: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """``f = 1/(1 + e^(-5 s)) * 1/(1 + 2 e^(-5 p))``: ``s`` the cosine similarity of the
    features, ``p`` the transit probability of the pair (scaled to ``[0, 1]``)."""
    s = np.asarray(similarity, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    appearance = 1.0 / (1.0 + LAMBDA_APPEARANCE * np.exp(-GAMMA * s))
    timing = 1.0 / (1.0 + LAMBDA_TIME * np.exp(-GAMMA * p))
    return (appearance * timing).astype(np.float32)


def fused_distance(similarity: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """``1 - fuse(s, p)``: a distance (smaller is closer) for ranking and re-ranking."""
    return (1.0 - fuse(similarity, probability)).astype(np.float32)


def time_factor(probability: np.ndarray) -> np.ndarray:
    """The fusion's time term divided by its value at ``p = 1``: a factor in ``(0, 1]`` (1 for
    the most likely transit, about 0.34 for an impossible one) that ``cluster.time=on`` puts
    on the similarity of two cameras' crops (:mod:`cacl.clustering.timing`)."""
    p = np.asarray(probability, dtype=np.float64)
    return (1.0 + LAMBDA_TIME * np.exp(-GAMMA)) / (1.0 + LAMBDA_TIME * np.exp(-GAMMA * p))


def transit_weight(model):
    """``(cams_a, times_a, cams_b, times_b) -> factor`` of a :class:`TransitModel`."""
    return lambda ca, ta, cb, tb: time_factor(model.probability(ca, ta, cb, tb))
