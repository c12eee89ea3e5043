"""Camera-aware pseudo labels (docs/method.md, "Beyond the paper"): centring, camera-aware neighbour
lists and the CA-Jaccard encoding (Chen et al., CVPR 2024), sparse, O(N·k) memory.

- :func:`camera_centered`: each row minus the mean row of its camera, re-normalised.
- :func:`camera_neighbors`: the intra-camera list (same camera, the row itself first) and the
  inter-camera list (other cameras only) of every row, exact, by the blocked search of
  :mod:`cacl.clustering.blocked` (one pass over the upper triangle for the inter lists, one small
  search per camera for the intra lists).
- :func:`ca_encoding`: ``V`` from the camera-aware k-reciprocal neighbours (CKRNN: reciprocal on
  the intra lists with ``k1_intra``, on the inter lists with ``k1_inter``, their union, no 2/3
  expansion), softmax weights of ``-d``, then the camera-aware local query expansion (CLQE: the
  mean of the rows of the ``k2_intra`` first intra and the ``k2_inter`` first inter neighbours).

The Jaccard distance of ``V`` is :func:`cacl.clustering.jaccard.jaccard_from_encoding`, as for the
paper's encoding. Lists are padded with -1 (and ``inf`` distances) where a camera holds fewer
rows than asked for; padded entries are never members.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from cacl.clustering.approximate import (
    ApproximateOptions,
    candidate_count,
    coarse_order,
    exact_rerank,
    fit_projection,
    project,
    projected_candidates,
)
from cacl.clustering.blocked import blocked_knn
from cacl.clustering.encoding import local_query_expansion, reciprocal_neighbors
from cacl.clustering.knn import InvalidFeaturesError, _self_first
from cacl.errors import CaclError

logger = logging.getLogger(__name__)

#: Cameras with fewer rows than this are not centred (their mean is too noisy to subtract).
MIN_CAMERA_ROWS = 4
#: :func:`own_camera_share`: at most this many query x row similarities per block, 2^26 float32
#: values (256 MB); with 4,096 queries of D = 2,048 the 32 MB chunk of rows makes it 64 MB.
SHARE_BLOCK = 1 << 26


def check_cameras(cameras: np.ndarray | torch.Tensor | list, n: int) -> np.ndarray:
    """The camera ids as an int64 array of length ``n``, or a :class:`CaclError` saying why not."""
    cams = np.asarray(cameras.cpu() if isinstance(cameras, torch.Tensor) else cameras)
    if cams.ndim != 1 or cams.size != n:
        raise CaclError(f"cameras must hold one id per feature row ({n}), got shape {cams.shape}")
    if cams.size and not np.issubdtype(cams.dtype, np.integer):
        raise CaclError(f"camera ids must be integers, got dtype {cams.dtype}")
    return cams.astype(np.int64)


def camera_centered(
    x: torch.Tensor,
    cameras: np.ndarray,
    min_rows: int = MIN_CAMERA_ROWS,
    *,
    in_place: bool = False,
) -> torch.Tensor:
    """``x_i - mean{x_k : cam_k = cam_i}``, L2-normalised again: a new tensor, or ``x`` itself
    overwritten with ``in_place``. Chunks of rows throughout: no copy of ``x`` beyond the output.

    Falls back safely: with a single camera nothing is subtracted (the features are returned as
    they are); a camera with fewer than ``min_rows`` rows keeps its rows; a row that becomes
    (numerically) zero keeps its original value.
    """
    cams = check_cameras(cameras, x.shape[0])
    ids, inverse, counts = np.unique(cams, return_inverse=True, return_counts=True)
    if ids.size < 2:
        logger.info("camera centring: one camera only, features left as they are")
        return x
    index = torch.as_tensor(inverse, device=x.device)
    step = max(1, (1 << 22) // max(x.shape[1], 1))
    chunks = [(a, min(a + step, x.shape[0])) for a in range(0, x.shape[0], step)]
    sums = torch.zeros((ids.size, x.shape[1]), dtype=torch.float64, device=x.device)
    for a, b in chunks:
        sums.index_add_(0, index[a:b], x[a:b].to(torch.float64))
    means = sums / torch.as_tensor(counts, dtype=torch.float64, device=x.device)[:, None]
    small = counts < min_rows
    if small.any():
        logger.info(
            "camera centring: %d camera(s) with fewer than %d rows left as they are: %s",
            int(small.sum()),
            min_rows,
            ", ".join(str(c) for c in ids[small]),
        )
        means[torch.as_tensor(small, device=x.device)] = 0.0
    means = means.to(x.dtype)
    out = x if in_place else torch.empty_like(x)
    for a, b in chunks:
        rows = x[a:b] - means[index[a:b]]
        norms = torch.linalg.vector_norm(rows, dim=1, keepdim=True)
        degenerate = (norms < 1e-6).squeeze(1)
        rows = rows / norms.clamp_min(1e-12)
        if degenerate.any():
            rows[degenerate] = x[a:b][degenerate]
        out[a:b] = rows
    return out.contiguous()


@dataclass(frozen=True)
class CameraNeighbors:
    """Intra- and inter-camera neighbour lists, nearest first, padded with -1 / ``inf``.

    Attributes:
        intra: ``(N, Ki)`` same-camera neighbours, ``intra[i, 0] == i``.
        intra_distances: ``(N, Ki)`` their ``2 - 2<x_i, x_j>``.
        inter: ``(N, Ke)`` nearest rows of other cameras.
        inter_distances: ``(N, Ke)``.
    """

    intra: np.ndarray
    intra_distances: np.ndarray
    inter: np.ndarray
    inter_distances: np.ndarray


def camera_neighbors(
    x: torch.Tensor,
    cameras: np.ndarray,
    k_intra: int,
    k_inter: int,
    *,
    block_size: int | None = None,
    approximate: bool = False,
    options: ApproximateOptions | None = None,
    progress: bool = False,
) -> CameraNeighbors:
    """The ``k_intra`` nearest rows of the same camera (itself first) and the ``k_inter`` nearest
    of other cameras for L2-normalised features ``x`` on any device: exact, or with
    ``approximate`` candidates from a PCA projection re-ranked by exact distances
    (:mod:`cacl.clustering.approximate`)."""
    cams = check_cameras(cameras, x.shape[0])
    if approximate:
        return _approximate_camera_neighbors(
            x, cams, k_intra, k_inter, options or ApproximateOptions(), progress
        )
    n = x.shape[0]
    block = block_size or (8192 if x.device.type == "cuda" else 2048)
    intra = np.full((n, k_intra), -1, dtype=np.int64)
    intra_d = np.full((n, k_intra), np.inf, dtype=np.float32)
    for cam in np.unique(cams):
        rows = np.flatnonzero(cams == cam)
        kk = min(k_intra, rows.size)
        sub = x[torch.as_tensor(rows, device=x.device)]
        idx, dist, _ = blocked_knn(sub, kk, squared_norms=False, block=block)
        idx, dist = _self_first(idx, dist)
        intra[rows, :kk] = rows[idx]
        intra_d[rows, :kk] = dist
    inter = np.full((n, k_inter), -1, dtype=np.int64)
    inter_d = np.full((n, k_inter), np.inf, dtype=np.float32)
    if np.unique(cams).size > 1:
        idx, dist, _ = blocked_knn(
            x,
            min(k_inter, n),
            squared_norms=False,
            block=block,
            exclude_groups=cams,
            progress=progress,
        )
        valid = np.isfinite(dist)
        inter[:, : idx.shape[1]] = np.where(valid, idx, -1)
        inter_d[:, : idx.shape[1]] = np.where(valid, dist, np.inf)
    else:
        logger.warning("camera-aware neighbours: one camera only, no inter-camera neighbour")
    return CameraNeighbors(intra, intra_d, inter, inter_d)


def _approximate_camera_neighbors(
    x: torch.Tensor,
    cams: np.ndarray,
    k_intra: int,
    k_inter: int,
    options: ApproximateOptions,
    progress: bool,
) -> CameraNeighbors:
    """:func:`camera_neighbors` by the approximate search: one projection; intra candidates
    searched camera by camera, inter candidates among the rows of other cameras."""
    n = x.shape[0]
    mean, basis = fit_projection(x, options.dim, sample=options.sample, seed=options.seed)
    y = project(x, mean, basis)
    ids = np.unique(cams)
    intra_cand = np.full((n, candidate_count(k_intra, options, n)), -1, dtype=np.int64)
    for cam in ids:
        rows = np.flatnonzero(cams == cam)
        found = projected_candidates(
            np.ascontiguousarray(y[rows]),
            candidate_count(k_intra, options, rows.size),
            options,
            progress=progress,
            desc=f"intra-camera candidates ({cam})",
        )
        intra_cand[rows, : found.shape[1]] = np.where(found >= 0, rows[np.maximum(found, 0)], -1)
    inter_cand = None
    if ids.size > 1:
        inter_cand = projected_candidates(
            y,
            candidate_count(k_inter, options, n),
            options,
            groups=cams,
            progress=progress,
            desc="inter-camera candidates",
        )
    order = coarse_order(y, seed=options.seed)
    del y
    intra, intra_d = exact_rerank(x, intra_cand, k_intra, order=order, progress=progress)
    intra = np.pad(intra, ((0, 0), (0, k_intra - intra.shape[1])), constant_values=-1)
    intra_d = np.pad(intra_d, ((0, 0), (0, k_intra - intra_d.shape[1])), constant_values=np.inf)
    intra, intra_d = _self_first_padded(intra, intra_d)
    inter = np.full((n, k_inter), -1, dtype=np.int64)
    inter_d = np.full((n, k_inter), np.inf, dtype=np.float32)
    if inter_cand is not None:
        found, dist = exact_rerank(x, inter_cand, k_inter, order=order, progress=progress)
        inter[:, : found.shape[1]], inter_d[:, : found.shape[1]] = found, dist
    else:
        logger.warning("camera-aware neighbours: one camera only, no inter-camera neighbour")
    return CameraNeighbors(intra, intra_d, inter, inter_d)


def _self_first_padded(idx: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's own index in column 0 (inserted when missing), -1 padding kept at the end."""
    n, k = idx.shape
    out_i = np.full_like(idx, -1)
    out_d = np.full_like(dist, np.inf)
    out_i[:, 0] = np.arange(n)
    out_d[:, 0] = 0.0
    others = (idx >= 0) & (idx != np.arange(n)[:, None])
    # stable: the others keep their order after the row itself
    order = np.argsort(~others, axis=1, kind="stable")
    moved_i = np.take_along_axis(np.where(others, idx, -1), order, axis=1)
    moved_d = np.take_along_axis(np.where(others, dist, np.inf), order, axis=1)
    out_i[:, 1:] = moved_i[:, : k - 1]
    out_d[:, 1:] = moved_d[:, : k - 1]
    return out_i, out_d


def ca_encoding(
    neighbors: CameraNeighbors,
    k1_intra: int,
    k1_inter: int,
    k2_intra: int,
    k2_inter: int,
) -> sp.csr_matrix:
    """The CA-Jaccard encoding ``V`` after CLQE, an ``N x N`` CSR matrix whose rows sum to 1.

    Members of ``R(i)`` are ``j in intra[i][:k1_intra+1]`` with ``i in intra[j][:k1_intra+1]``, and
    ``j in inter[i][:k1_inter+1]`` with ``i in inter[j][:k1_inter+1]``; both kinds carry their
    distance in the lists, so no distance is recomputed.
    """
    n = neighbors.intra.shape[0]
    if neighbors.intra.shape[1] < k1_intra + 1 or neighbors.inter.shape[1] < k1_inter + 1:
        raise ValueError("the neighbour lists must hold k1 + 1 columns of each kind")
    parts = []
    for rank, dist, k in (
        (neighbors.intra, neighbors.intra_distances, k1_intra),
        (neighbors.inter, neighbors.inter_distances, k1_inter),
    ):
        members = reciprocal_neighbors(rank, k)  # padded with -1, order of rank kept
        row, pos = np.nonzero(members >= 0)
        parts.append((row, members[row, pos], dist[row, pos].astype(np.float64)))
    row = np.concatenate([p[0] for p in parts])
    col = np.concatenate([p[1] for p in parts])
    d = np.concatenate([p[2] for p in parts])
    weight = np.exp(-d)
    total = np.bincount(row, weights=weight, minlength=n)
    v = sp.csr_matrix(((weight / total[row]).astype(np.float32), (row, col)), shape=(n, n))
    v.sum_duplicates()
    v.sort_indices()
    rows = np.concatenate(
        [neighbors.intra[:, : max(k2_intra, 0)], neighbors.inter[:, : max(k2_inter, 0)]], axis=1
    )
    if rows.shape[1] <= 1 and (rows.shape[1] == 0 or (rows[:, 0] == np.arange(n)).all()):
        return v
    return local_query_expansion(v, rows, rows.shape[1])


def own_camera_share(
    features: torch.Tensor | np.ndarray,
    cameras: np.ndarray,
    k: int = 10,
    *,
    max_queries: int = 4096,
    seed: int = 0,
    max_block: int = SHARE_BLOCK,
) -> tuple[float, float]:
    """How camera-bound the features are: ``(share, chance)``.

    ``share``: of each row's ``k`` nearest other rows (cosine), the fraction from its own camera,
    averaged over at most ``max_queries`` rows (a fixed random sample when N is larger).
    ``chance``: the same fraction if neighbours were drawn at random, ``(n_cam - 1) / (N - 1)``
    averaged over the same rows. Features that ignore the camera give ``share`` near ``chance``.

    The features (any float dtype, float16 memory banks included) are read in chunks of rows,
    each converted to float32 on its own (the cosines divide by the row norms; the top ``k`` are
    merged across chunks): memory of at most ``max_block`` query x row similarities plus a chunk
    of 2^23 values, whatever N, never a float32 copy of all the rows nor a query x N block.
    """
    x = torch.as_tensor(features).detach()
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InvalidFeaturesError(
            f"features must be a non-empty (N, D) matrix, got shape {tuple(x.shape)}"
        )
    cams = check_cameras(cameras, x.shape[0])
    n = x.shape[0]
    if n < 2:
        return float("nan"), float("nan")
    k = min(k, n - 1)
    rows = np.arange(n)
    if n > max_queries:
        rows = np.sort(np.random.default_rng(seed).choice(n, max_queries, replace=False))
    q = torch.as_tensor(rows, device=x.device)
    queries, norms = _float_rows(x[q], rows)
    queries = queries / norms[:, None]
    # columns per block: at most max_block similarities, and at most 2^23 values (32 MB) of rows
    step = max(1, min(max_block // rows.size, (1 << 23) // x.shape[1]))
    best = torch.empty(rows.size, 0, device=x.device)
    best_idx = torch.empty(rows.size, 0, dtype=torch.long, device=x.device)
    for a in range(0, n, step):
        b = min(a + step, n)
        chunk, norms = _float_rows(x[a:b], np.arange(a, b))
        sim = (queries @ chunk.T).div_(norms)  # (Q, b - a) cosines, no normalised copy of rows
        del chunk
        inside = torch.nonzero((q >= a) & (q < b)).flatten()
        sim[inside, q[inside] - a] = -math.inf  # not itself
        top = sim.topk(min(k, b - a), dim=1)
        del sim
        best = torch.cat([best, top.values], dim=1)
        best_idx = torch.cat([best_idx, top.indices + a], dim=1)
        if best.shape[1] > k:
            keep = best.topk(k, dim=1).indices
            best, best_idx = best.gather(1, keep), best_idx.gather(1, keep)
    cam_t = torch.as_tensor(cams, device=x.device)
    own = int((cam_t[best_idx] == cam_t[q][:, None]).sum())
    _, inverse, counts = np.unique(cams, return_inverse=True, return_counts=True)
    per_row = counts[inverse]
    chance = float(((per_row[rows] - 1) / (n - 1)).mean())
    return own / (rows.size * k), chance


def _float_rows(chunk: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``chunk`` in float32 (itself when it is float32) and the norms of its rows; an
    :class:`InvalidFeaturesError` naming the first bad row (``rows``: the row numbers of the
    chunk) for NaN, infinite or zero rows."""
    x = chunk.to(torch.float32)
    norms = torch.linalg.vector_norm(x, dim=1)
    bad = ~torch.isfinite(norms) | (norms == 0)
    if bool(bad.any()):
        first = int(rows[int(torch.nonzero(bad)[0])])
        raise InvalidFeaturesError(
            f"feature row {first} is NaN, infinite or zero: no cosine neighbours for it; check "
            "the model output or the memory bank"
        )
    return x, norms
