"""Retrieval evaluation: CMC, mAP and mINP under the Market-1501 protocol."""

from cacl.evaluation.metrics import RetrievalResult, evaluate, evaluate_rank

__all__ = [
    "RetrievalResult",
    "evaluate",
    "evaluate_rank",
]
