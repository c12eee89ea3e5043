"""Approximate k nearest neighbours for large N: candidates found in a PCA projection, every
distance exact.

1. **Projection**: the ``dim`` leading principal directions of a random sample of rows
   (randomised SVD), every row projected chunk by chunk: an ``(N, dim)`` float32 copy, 1/32 of the
   features at D = 2048, dim = 64.
2. **Candidates**: each row's ``ceil(candidates * k)`` nearest rows *in the projection*, from an
   HNSW graph (faiss ``IndexHNSWFlat``; ``ef_search`` bounds the effort of a query), or, below
   ``exact_below`` rows, from an exact blocked search of the projection. Rows may be restricted to
   other groups (inter-camera lists) or searched within their group (intra-camera lists).
3. **Re-ranking**: the exact distance ``2 - 2<x_i, x_j>`` of every candidate in full dimension,
   the ``k`` nearest kept. Rows are taken in chunks of rows that lie near each other (ordered by a
   coarse k-means cell of the projection), so one matrix product per chunk covers their
   candidates together instead of one gather per pair.

A list may miss a true neighbour (one that was not a candidate), it never holds a wrong distance.
:func:`sample_recall` measures the recall of the lists on a sample of rows against an exact search
(the pipeline logs it). Memory is O(N·(dim + k)) beside the features; no N x N array.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from tqdm.auto import tqdm

from cacl.clustering.blocked import blocked_knn
from cacl.errors import CaclError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApproximateOptions:
    """Settings of the approximate search (the defaults are the measured ones; see the README).

    Attributes:
        dim: dimensions of the projection the candidates are searched in.
        candidates: candidate lists of ``ceil(candidates * k)`` rows, re-ranked exactly.
        hnsw_m: links per node of the HNSW graph.
        ef_construction: HNSW build effort.
        ef_search: HNSW query effort (at least the candidate list length is used).
        sample: rows the projection is fitted on (a fixed random sample).
        exact_below: search the projection exactly (blocked products) below this many rows.
        recall_rows: rows whose lists are checked against an exact search (0: no check).
        seed: seed of the samples.
    """

    dim: int = 64
    candidates: float = 1.5
    hnsw_m: int = 32
    ef_construction: int = 64
    ef_search: int = 96
    sample: int = 20_000
    exact_below: int = 50_000
    recall_rows: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.dim < 1 or self.hnsw_m < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ValueError(f"invalid approximate kNN options: {self}")
        if self.candidates < 1.0:
            raise ValueError(f"candidates must be at least 1 (x k), got {self.candidates}")
        if self.sample < 2:
            raise ValueError(f"sample must be at least 2 rows, got {self.sample}")

    @classmethod
    def from_mapping(cls, values: dict | None) -> ApproximateOptions:
        """Options from a dict of some of the fields (unknown keys are an error)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise CaclError(
                f"unknown approximate kNN option(s) {', '.join(unknown)}; known: "
                f"{', '.join(sorted(known))}"
            )
        return cls(**values)


def candidate_count(k: int, options: ApproximateOptions, n: int) -> int:
    """Length of the candidate lists for ``k`` neighbours among ``n`` rows."""
    return min(n, max(k, math.ceil(options.candidates * k)))


def fit_projection(
    x: torch.Tensor, dim: int, *, sample: int = 20_000, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean, basis)``: the mean row and the ``(D, dim)`` leading principal directions of a
    random sample of at most ``sample`` rows (randomised SVD)."""
    n, d = x.shape
    dim = min(dim, d)
    rows = (
        np.arange(n)
        if n <= sample
        else np.sort(np.random.default_rng(seed).choice(n, sample, replace=False))
    )
    s = x[torch.as_tensor(rows, device=x.device)].float()
    mean = s.mean(dim=0)
    s -= mean
    torch.manual_seed(seed)  # svd_lowrank draws its random test matrix from torch
    q = min(dim + 10, *s.shape)
    _, _, v = torch.svd_lowrank(s, q=q, niter=4)
    return mean, v[:, :dim].contiguous()


def project(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor) -> np.ndarray:
    """``(x - mean) @ basis`` as a C-contiguous float32 numpy array, chunk by chunk (no copy of x)."""
    n = x.shape[0]
    out = np.empty((n, basis.shape[1]), dtype=np.float32)
    offset = mean @ basis
    step = max(1, (1 << 22) // max(x.shape[1], 1))
    for a in range(0, n, step):
        out[a : a + step] = (x[a : a + step].float() @ basis - offset).cpu().numpy()
    return out


def projected_candidates(
    y: np.ndarray,
    kc: int,
    options: ApproximateOptions,
    *,
    groups: np.ndarray | None = None,
    progress: bool = False,
    desc: str = "candidates",
) -> np.ndarray:
    """The ``kc`` nearest rows of every row in the projection ``y`` (itself included unless
    ``groups`` is given: then rows of the row's own group are excluded), ``(N, kc)`` int64, -1 where
    fewer exist."""
    n = y.shape[0]
    kc = min(kc, n)
    if n < options.exact_below:
        idx, dist, _ = blocked_knn(
            torch.from_numpy(y), kc, squared_norms=True, block=2048, exclude_groups=groups
        )
        return np.where(np.isfinite(dist), idx, -1)
    return _hnsw_candidates(y, kc, options, groups, progress, desc)


def _hnsw_candidates(
    y: np.ndarray,
    kc: int,
    options: ApproximateOptions,
    groups: np.ndarray | None,
    progress: bool,
    desc: str,
) -> np.ndarray:
    import faiss

    n, dim = y.shape
    order = np.arange(n) if groups is None else np.argsort(groups, kind="stable")
    yo = y if groups is None else np.ascontiguousarray(y[order])
    index = faiss.IndexHNSWFlat(dim, options.hnsw_m)
    index.hnsw.efConstruction = options.ef_construction
    step = 50_000
    with tqdm(total=2 * n, desc=desc, unit="row", disable=not progress, leave=False) as bar:
        for a in range(0, n, step):  # in pieces: the bar moves, the graph is the same
            index.add(yo[a : a + step])
            bar.update(min(step, n - a))
        out = np.full((n, kc), -1, dtype=np.int64)
        ef = max(options.ef_search, kc)
        if groups is None:
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            for a in range(0, n, step):
                _, found = index.search(yo[a : a + step], kc, params=params)
                out[a : a + step] = found
                bar.update(min(step, n - a))
            return out
        sorted_groups = groups[order]
        bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
        starts, stops = np.r_[0, bounds], np.r_[bounds, n]
        for a, b in zip(starts, stops, strict=True):
            own = faiss.IDSelectorRange(int(a), int(b))
            params = faiss.SearchParametersHNSW()
            params.efSearch = ef
            params.sel = faiss.IDSelectorNot(own)  # rows of other groups only
            for c in range(a, b, step):
                d = min(c + step, b)
                _, found = index.search(yo[c:d], kc, params=params)
                out[order[c:d]] = np.where(found >= 0, order[np.maximum(found, 0)], -1)
            bar.update(b - a)
    return out


def coarse_order(y: np.ndarray, *, seed: int = 0, cell: int = 256) -> np.ndarray:
    """A row order that keeps rows of one coarse k-means cell of ``y`` together (about ``cell``
    rows per cell), so chunks of consecutive rows share their neighbours."""
    n = y.shape[0]
    cells = n // cell
    if cells < 2:
        return np.arange(n)
    import faiss

    km = faiss.Kmeans(y.shape[1], cells, niter=8, seed=seed, max_points_per_centroid=64)
    km.train(y)
    _, assign = km.index.search(y, 1)
    return np.argsort(assign[:, 0], kind="stable")


def exact_rerank(
    x: torch.Tensor,
    candidates: np.ndarray,
    k: int,
    *,
    order: np.ndarray | None = None,
    chunk: int = 64,
    progress: bool = False,
    desc: str = "exact re-ranking",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest of each row's candidates by the exact distance ``2 - 2<x_i, x_j>`` (unit
    rows ``x``): ``(indices, distances)``, nearest first, padded with -1 / ``inf`` where a row has
    fewer than ``k`` candidates. Candidates must be distinct within a row (-1 for none).

    The candidate rows of ``chunk`` rows at a time are gathered into one reused buffer (a batch of
    small products follows); ``order`` (rows of one neighbourhood together) lets consecutive
    chunks find the rows they share still in cache.
    """
    n, kc = candidates.shape
    k = min(k, kc)
    out_i = np.full((n, k), -1, dtype=np.int64)
    out_d = np.full((n, k), np.inf, dtype=np.float32)
    order = np.arange(n) if order is None else order
    dim = x.shape[1]
    buffer = torch.empty((chunk * kc, dim), dtype=torch.float32, device=x.device)
    for a in tqdm(range(0, n, chunk), desc=desc, disable=not progress, leave=False):
        rows = order[a : a + chunk]
        cand = candidates[rows]
        valid = cand >= 0
        flat = torch.as_tensor(np.where(valid, cand, 0).ravel(), device=x.device)
        gathered = buffer[: flat.numel()]
        if x.dtype == torch.float32:
            torch.index_select(x, 0, flat, out=gathered)
        else:
            gathered.copy_(x[flat])
        xr = x[torch.as_tensor(rows, device=x.device)].float()
        sims = torch.bmm(gathered.view(rows.size, kc, dim), xr.unsqueeze(2)).squeeze(2).cpu()
        dist = (2.0 - 2.0 * sims).clamp_min_(0.0)
        dist[torch.from_numpy(~valid)] = math.inf
        best, pos = torch.topk(dist, k, dim=1, largest=False)
        picked = np.take_along_axis(cand, pos.numpy(), axis=1)
        best = best.numpy()
        out_i[rows] = np.where(np.isfinite(best), picked, -1)
        out_d[rows] = best
    return out_i, out_d


def sample_recall(
    x: torch.Tensor,
    indices: np.ndarray,
    *,
    rows: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
    within: bool = False,
) -> float:
    """Mean share of each sampled row's exact ``K`` nearest neighbours (``K`` = valid entries of
    its list) that its list holds, over at most ``rows`` rows (a fixed random sample).

    With ``groups``: the exact neighbours are taken among rows of other groups (``within=False``,
    inter-camera lists) or of the row's own group (``within=True``, intra-camera lists).
    """
    n = x.shape[0]
    sample = np.arange(n) if n <= rows else np.random.default_rng(seed).choice(n, rows, False)
    hits = total = 0
    g = None if groups is None else torch.as_tensor(groups, device=x.device)
    for a in range(0, sample.size, 128):
        q = sample[a : a + 128]
        qt = torch.as_tensor(q, device=x.device)
        sims = x[qt].float() @ x.float().T if n <= 200_000 else _sims_chunked(x, qt)
        if g is not None:
            same = g[qt][:, None] == g[None, :]
            sims[same if not within else ~same] = -math.inf
        for r, i in enumerate(q):
            mine = indices[i][indices[i] >= 0]
            if mine.size == 0:
                continue
            exact = torch.topk(sims[r], mine.size).indices.cpu().numpy()
            hits += np.intersect1d(exact, mine).size
            total += mine.size
    return hits / total if total else float("nan")


def _sims_chunked(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``x[q] @ x.T`` without a float32 copy of the whole of ``x``."""
    out = torch.empty((q.numel(), x.shape[0]), dtype=torch.float32, device=x.device)
    xq = x[q].float()
    step = 65_536
    for a in range(0, x.shape[0], step):
        out[:, a : a + step] = xq @ x[a : a + step].float().T
    return out
