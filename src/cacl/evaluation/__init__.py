"""Retrieval evaluation: CMC, mAP and mINP under the Market-1501 protocol."""

from cacl.evaluation.metrics import RetrievalResult, evaluate, evaluate_rank
from cacl.evaluation.rerank import re_ranking, re_ranking_features

__all__ = [
    "RetrievalResult",
    "evaluate",
    "evaluate_rank",
    "re_ranking",
    "re_ranking_features",
]
