"""Fusions of an appearance similarity and a spatio-temporal probability: st-ReID's logistic
product and the log-linear (naive-Bayes) sum that ``cacl eval --st`` and ``cacl serve`` use by
default (:data:`DEFAULT_FUSION`)."""

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


def log_linear(similarity, probability, weight: float, floor: float) -> np.ndarray:
    """``s + weight * log(p + floor)``: the naive-Bayes sum of the two cues' log-odds, the
    cosine ``s`` standing for the appearance's (up to the scale ``1 / weight``) and
    ``log(p + floor)`` for the time's, where ``p`` is the transit density relative to its
    peak and ``floor`` the share left for transits the model never saw."""
    s = np.asarray(similarity, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    return s + weight * np.log(p + floor)


def logistic(similarity, probability, gamma: float = GAMMA, lambda_time: float = LAMBDA_TIME):
    """st-ReID's product of logistics with settable constants (``gamma`` for both cues)."""
    s = np.asarray(similarity, dtype=np.float64)
    p = np.asarray(probability, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-gamma * s)) / (1.0 + lambda_time * np.exp(-gamma * p))


#: The fusions by name: ``(similarity, probability, **params) -> score`` (larger is closer).
FUSIONS = {"logistic": logistic, "log_linear": log_linear}


def fusion(name: str, similarity, probability, **params) -> np.ndarray:
    """The score of fusion ``name`` (:data:`FUSIONS`) with its parameters."""
    return FUSIONS[name](similarity, probability, **params)


#: The fusion ``cacl eval --st`` and ``cacl serve`` use: ``(name, parameters)``. Chosen with
#: the transit model's :data:`~cacl.temporal.transit.DEFAULT_ESTIMATOR` on the synthetic site's
#: held-out seeds 4-6 (``benchmarks/st_fusion_sweep.py``, the largest mean gain of 25 fusions x
#: 14 estimators: +0.143 mAP), never on the seeds 1-3 of the reported table.
DEFAULT_FUSION: tuple[str, dict] = ("log_linear", {"weight": 0.2, "floor": 0.2})


def fused_distance(
    similarity: np.ndarray, probability: np.ndarray, fusion: tuple[str, dict] | None = None
) -> np.ndarray:
    """``1 - score`` of a fusion (default :data:`DEFAULT_FUSION`): a distance (smaller is
    closer) for ranking."""
    name, params = fusion or DEFAULT_FUSION
    if name not in FUSIONS:
        raise ValueError(f"unknown fusion {name!r}; known: {', '.join(FUSIONS)}")
    return (1.0 - FUSIONS[name](similarity, probability, **params)).astype(np.float32)


def time_factor(probability: np.ndarray) -> np.ndarray:
    """The fusion's time term divided by its value at ``p = 1``: a factor in ``(0, 1]`` (1 for
    the most likely transit, about 0.34 for an impossible one) that ``cluster.time=on`` puts
    on the similarity of two cameras' crops (:mod:`cacl.clustering.timing`)."""
    p = np.asarray(probability, dtype=np.float64)
    return (1.0 + LAMBDA_TIME * np.exp(-GAMMA)) / (1.0 + LAMBDA_TIME * np.exp(-GAMMA * p))


def transit_weight(model):
    """``(cams_a, times_a, cams_b, times_b) -> factor`` of a :class:`TransitModel`."""
    return lambda ca, ta, cb, tb: time_factor(model.probability(ca, ta, cb, tb))
