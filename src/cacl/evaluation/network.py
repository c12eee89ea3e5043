"""Evaluate a network on a dataset's query and gallery (branch 1 features, Euclidean distance)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from cacl.data.transforms import test_transform
from cacl.data.types import ReidDataset
from cacl.errors import CaclError
from cacl.evaluation import evaluate
from cacl.evaluation.extract import extract_features

log = logging.getLogger(__name__)


#: Working memory of one chunk of rows of :func:`squared_euclidean`.
_CHUNK_BYTES = 64 * 2**20


def squared_euclidean(query: torch.Tensor, gallery: torch.Tensor) -> np.ndarray:
    """``||q - g||^2`` for every pair, computed as ``|q|^2 + |g|^2 - 2 q.g`` in float32.

    One ``(q, g)`` float32 array and chunks of rows: the products are written into the answer and
    turned into distances in place (a whole-matrix expression would hold three ``q x g``
    temporaries at once: 11.5 GB at MSMT17's test size). The values are those of the whole-matrix
    expression, bit for bit.
    """
    q, g = query.float(), gallery.float()
    q_sq = (q * q).sum(1, keepdim=True)
    g_sq = (g * g).sum(1).unsqueeze(0)
    dist = q @ g.t()
    step = max(1, _CHUNK_BYTES // max(1, 4 * dist.shape[1]))
    for a in range(0, dist.shape[0], step):
        rows = dist[a : a + step]
        # fl(-2 q.g + (|q|^2 + |g|^2)) == fl((|q|^2 + |g|^2) - 2 q.g): doubling is exact
        rows.mul_(-2.0).add_(q_sq[a : a + step] + g_sq).clamp_min_(0)
    return dist.numpy()


def network_features(
    network: torch.nn.Module,
    dataset: ReidDataset,
    *,
    height: int,
    width: int,
    device: torch.device,
    batch_size: int = 128,
    workers: int = 0,
    progress: bool = True,
    shard: bool = False,
    branch: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(query, gallery)`` features of ``network`` in eval mode (a CACL network then returns
    branch 1's ``x``); the gallery's rows follow the queries' in one storage.

    ``branch=2`` scores the gray branch of a CACL network instead, on gray-scale images (a
    diagnostic: inference always uses branch 1). ``shard=True``: every rank of a process group
    extracts its share (all ranks must call it).
    """
    if not dataset.has_test_split:
        raise ValueError(f"{dataset.name} has no query/gallery split to evaluate on")
    forward = network
    if branch == 2:
        gray_branch = getattr(network, "branch2", None)
        if gray_branch is None:
            raise CaclError(
                "this network has no gray branch (trained with model.gray_branch=false)"
            )
        forward = lambda images: gray_branch(images)[1]  # noqa: E731 - (pooled, x) -> x
    elif branch != 1:
        raise CaclError(f"branch must be 1 (colour) or 2 (gray), got {branch}")
    was_training = network.training
    network.eval()
    from cacl.models.network import network_interpolation

    transform = test_transform(height, width, branch == 2, network_interpolation(network))
    kwargs = dict(
        device=device, batch_size=batch_size, workers=workers, progress=progress, shard=shard
    )
    qf = extract_features(forward, dataset.query, transform, desc="query", **kwargs)
    # The gallery's rows go right after the queries' in one tensor: the re-ranking uses the two
    # as one matrix instead of concatenating them into a copy (0.8 GB at MSMT17's test size).
    features = qf.new_empty((len(qf) + len(dataset.gallery), qf.shape[1]))
    features[: len(qf)] = qf
    qf = features[: len(qf)]
    gallery_rows = features[len(qf) :]
    gf = extract_features(
        forward, dataset.gallery, transform, desc="gallery", out=gallery_rows, **kwargs
    )
    network.train(was_training)
    return qf, gf


def network_distances(
    network: torch.nn.Module, dataset: ReidDataset, *, rerank: bool = False, **kwargs
) -> np.ndarray:
    """Query x gallery distances of :func:`network_features` (same keyword arguments):
    squared Euclidean, or k-reciprocal re-ranked with ``rerank``."""
    qf, gf = network_features(network, dataset, **kwargs)
    if rerank:
        from cacl.evaluation import re_ranking_features

        return re_ranking_features(qf, gf)
    return squared_euclidean(qf, gf)


def score_distances(distmat: np.ndarray, dataset: ReidDataset) -> dict[str, float]:
    """``mAP``, ``mINP`` and ``rank1/5/10`` (fractions) and the number of valid queries of a
    query x gallery distance matrix, by the Market-1501 protocol."""
    q_pids = np.array([s.pid for s in dataset.query])
    g_pids = np.array([s.pid for s in dataset.gallery])
    q_cams = np.array([s.camid for s in dataset.query])
    g_cams = np.array([s.camid for s in dataset.gallery])
    result = evaluate(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=50)
    return {
        "mAP": float(result.mAP),
        "mINP": float(result.mINP),
        "rank1": result.rank(1),
        "rank5": result.rank(min(5, len(result.cmc))),
        "rank10": result.rank(min(10, len(result.cmc))),
        "valid_queries": int(result.num_valid_queries),
    }


def evaluate_network(network: torch.nn.Module, dataset: ReidDataset, **kwargs) -> dict[str, float]:
    """:func:`network_distances` scored by :func:`score_distances` (same keyword arguments)."""
    return score_distances(network_distances(network, dataset, **kwargs), dataset)
