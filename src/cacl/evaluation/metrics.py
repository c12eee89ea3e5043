"""Retrieval metrics for person re-identification: CMC, mAP and mINP.

The protocol is the Market-1501 one used by torchreid's ``evaluate_rank`` (``eval_market1501``):
for each query the gallery is ranked by increasing distance (the order of
``np.argsort(distmat, axis=1)``, ties included), gallery images with the same identity *and* the
same camera as the query are removed, and queries left without any true match are skipped.

* ``cmc[k]`` is the fraction of valid queries with a true match among the first ``k + 1`` images.
* The average precision (AP) of a query is the mean, over its true matches, of the precision at
  the rank of that match; mAP is the mean AP over valid queries.
* The inverse negative penalty (INP) of a query is its number of true matches divided by the rank
  (1-based) of its last true match; mINP is the mean over valid queries.

How it is computed: only the gallery images that share the query's identity matter, so instead of an ``argsort`` of
every row this module sorts the *values* of each row (``np.sort`` is several times faster than
``np.argsort``) and finds the rank of each same-identity image by binary search.  When such an
image's distance is tied with another image of the same row, its rank depends on how
``np.argsort`` breaks ties, so those rows, and only those, are ranked with ``np.argsort`` itself.
Queries are processed in chunks whose working memory is bounded by ``chunk_bytes``.

The CMC curve equals torchreid's bit for bit.  AP is summed in another order than in torchreid's
python code (numpy's pairwise sum over the whole row), so mAP can differ from it in the last bit or
two of a float64 (relative differences below 1e-15).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from cacl.errors import EvaluationError

logger = logging.getLogger(__name__)

ArrayLike = np.ndarray | torch.Tensor

DEFAULT_CHUNK_BYTES = 256 * 2**20
"""Default bound on the working memory of the evaluation (all worker threads together)."""

# Working memory per distance-matrix element: the sorted copy of the row (itemsize) plus, for a
# row with ties, its argsort and the inverse permutation (2 x int64).
_ROW_EXTRA_BYTES = 16
# Working memory per (query, same-identity gallery image) pair: about a dozen int64/float arrays.
_PAIR_BYTES = 128


@dataclass(frozen=True)
class RetrievalResult:
    """Result of :func:`evaluate`.

    Attributes:
        mAP: mean average precision over the valid queries, in [0, 1].
        mINP: mean inverse negative penalty over the valid queries, in [0, 1].
        cmc: ``float32`` array of length ``max_rank`` (or the gallery size if smaller);
            ``cmc[k]`` is the fraction of valid queries with a true match in the top ``k + 1``.
        num_valid_queries: queries with at least one true match left after the filtering.
        num_skipped: queries without a true match, left out of every average.
        query_ap: ``float64`` array with the average precision of every query, NaN for the
            skipped ones (``mAP`` is its ``nanmean``).
    """

    mAP: float
    mINP: float
    cmc: np.ndarray
    num_valid_queries: int
    num_skipped: int
    query_ap: np.ndarray | None = None

    def rank(self, k: int) -> float:
        """Return the rank-``k`` accuracy (``cmc[k - 1]``), e.g. ``result.rank(1)``."""
        if not 1 <= k <= len(self.cmc):
            raise ValueError(f"k must be in [1, {len(self.cmc)}], got {k}")
        return float(self.cmc[k - 1])


def evaluate_rank(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """Market-1501 CMC and mAP, with the interface and the numbers of torchreid's ``evaluate_rank``.

    Args:
        distmat: ``(num_query, num_gallery)`` distances, smaller is more similar.
        q_pids: ``(num_query,)`` identities of the queries.
        g_pids: ``(num_gallery,)`` identities of the gallery images.
        q_camids: ``(num_query,)`` camera ids of the queries.
        g_camids: ``(num_gallery,)`` camera ids of the gallery images.
        max_rank: length of the CMC curve (reduced to the gallery size, with a warning, if larger).

    Returns:
        ``(cmc, mAP)``: the ``float32`` CMC curve and the mean average precision.

    Raises:
        EvaluationError: bad shapes, NaN distances, or no query with a valid match.

    Example:
        >>> import numpy as np
        >>> d = np.array([[0.1, 0.5, 0.9]], dtype=np.float32)
        >>> cmc, mAP = evaluate_rank(d, np.array([1]), np.array([2, 1, 1]),
        ...                          np.array([0]), np.array([1, 1, 2]), max_rank=3)
        >>> cmc.tolist(), round(mAP, 4)
        ([0.0, 1.0, 1.0], 0.5833)
    """
    result = evaluate(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max_rank)
    return result.cmc, result.mAP


def evaluate(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    same_camera_filter: bool = True,
    *,
    num_workers: int = 1,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> RetrievalResult:
    """CMC, mAP and mINP of a query-gallery distance matrix (Market-1501 protocol by default).

    Args:
        distmat: ``(num_query, num_gallery)`` distances (numpy array or torch tensor), smaller is
            more similar; ``+inf`` is allowed, NaN is not.  The ranking is that of
            ``np.argsort(distmat, axis=1)`` in ``distmat``'s own dtype, ties included.
        q_pids: ``(num_query,)`` identities of the queries.
        g_pids: ``(num_gallery,)`` identities of the gallery images.  Distractors (e.g. Market
            id 0) are ordinary gallery images that match no query of another id.
        q_camids: ``(num_query,)`` camera ids of the queries.
        g_camids: ``(num_gallery,)`` camera ids of the gallery images.
        max_rank: length of the CMC curve; if the gallery is smaller, a warning is logged and the
            gallery size is used (as torchreid does).
        same_camera_filter: remove, for each query, the gallery images with the same identity and
            the same camera (the Market-1501 / DukeMTMC-reID / MSMT17 protocol).  With ``False``
            every gallery image of the query's identity counts as a true match.
        num_workers: threads that evaluate chunks of queries in parallel (numpy releases the GIL
            while sorting).  ``1`` evaluates in the calling thread.
        chunk_bytes: approximate bound on the working memory of all workers together.

    Returns:
        A :class:`RetrievalResult`.  If a gallery row ends (after the filtering) before
        ``max_rank``, the CMC of that valid query is 1 at the ranks past its end.

    Raises:
        EvaluationError: bad shapes, NaN distances, or no query with a valid match.
    """
    dist = _to_numpy(distmat, "distmat")
    q_pids_np = _to_numpy(q_pids, "q_pids")
    g_pids_np = _to_numpy(g_pids, "g_pids")
    q_camids_np = _to_numpy(q_camids, "q_camids")
    g_camids_np = _to_numpy(g_camids, "g_camids")
    _validate(dist, q_pids_np, g_pids_np, q_camids_np, g_camids_np)
    max_rank = _check_max_rank(max_rank, dist.shape[1])
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")

    # Gallery indices grouped by identity: the same-identity images of a query are one slice.
    g_by_pid = np.argsort(g_pids_np, kind="stable")
    g_pids_sorted = g_pids_np[g_by_pid]
    lo = np.searchsorted(g_pids_sorted, q_pids_np, side="left")
    hi = np.searchsorted(g_pids_sorted, q_pids_np, side="right")
    num_same_id = hi - lo

    def run(chunk: tuple[int, int]) -> tuple[np.ndarray, ...]:
        start, stop = chunk
        return _evaluate_chunk(
            dist[start:stop],
            q_camids_np[start:stop],
            lo[start:stop],
            num_same_id[start:stop],
            g_by_pid,
            g_camids_np,
            same_camera_filter,
        )

    bounds = _chunk_bounds(num_same_id, dist.shape[1], dist.itemsize, chunk_bytes, num_workers)
    chunks = list(zip(bounds[:-1], bounds[1:], strict=True))
    try:
        if num_workers == 1 or len(chunks) == 1:
            parts = [run(chunk) for chunk in chunks]
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as pool:
                parts = list(pool.map(run, chunks))
    except _NaNFound:
        raise EvaluationError(_nan_message(dist)) from None
    per_query = [np.concatenate(p) for p in zip(*parts, strict=True)]
    return _summarise(*per_query, num_same_id, same_camera_filter, max_rank)


def _check_max_rank(max_rank: int, num_g: int) -> int:
    """``max_rank`` checked, and cut (with a warning) to a smaller gallery."""
    if isinstance(max_rank, bool) or not isinstance(max_rank, int | np.integer) or max_rank < 1:
        raise EvaluationError(f"max_rank must be a positive integer, got {max_rank!r}")
    if num_g < max_rank:
        logger.warning(
            "The gallery has only %d images, fewer than max_rank=%d: the CMC curve is cut to "
            "rank %d.",
            num_g,
            max_rank,
            num_g,
        )
        return num_g
    return max_rank


def _summarise(
    num_matches: np.ndarray,
    ap: np.ndarray,
    first_rank: np.ndarray,
    last_rank: np.ndarray,
    num_same_id: np.ndarray,
    same_camera_filter: bool,
    max_rank: int,
) -> RetrievalResult:
    """CMC, mAP and mINP from the per-query statistics of :func:`_evaluate_chunk`."""
    num_q = len(num_matches)
    valid = num_matches > 0
    num_valid = int(valid.sum())
    num_skipped = num_q - num_valid
    if num_valid == 0:
        raise EvaluationError(_no_valid_query_message(num_q, num_same_id, same_camera_filter))
    if num_skipped:
        logger.warning(
            "%d of %d queries have no true match in the gallery%s and were skipped; "
            "mAP, mINP and CMC are averaged over the other %d.",
            num_skipped,
            num_q,
            " under another camera" if same_camera_filter else "",
            num_valid,
        )
    first = first_rank[valid]
    hits = np.bincount(first[first < max_rank], minlength=max_rank)
    cmc = np.cumsum(hits).astype(np.float32) / float(num_valid)
    return RetrievalResult(
        mAP=float(np.mean(ap[valid])),
        mINP=float(np.mean(num_matches[valid] / (last_rank[valid] + 1.0))),
        cmc=cmc,
        num_valid_queries=num_valid,
        num_skipped=num_skipped,
        query_ap=np.where(valid, ap, np.nan),
    )


def _evaluate_chunk(
    dist: np.ndarray,
    q_camids: np.ndarray,
    lo: np.ndarray,
    num_same_id: np.ndarray,
    g_by_pid: np.ndarray,
    g_camids: np.ndarray,
    same_camera_filter: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-query statistics of a chunk of queries.

    Returns ``(num_matches, ap, first_rank, last_rank)``: the number of true matches, the average
    precision, and the 0-based ranks (after filtering) of the first and last true match; the last
    three are 0 for queries without a true match.
    """
    num_q, num_g = dist.shape
    num_matches = np.zeros(num_q, dtype=np.int64)
    ap = np.zeros(num_q, dtype=np.float64)
    first_rank = np.zeros(num_q, dtype=np.int64)
    last_rank = np.zeros(num_q, dtype=np.int64)
    num_pairs = int(num_same_id.sum())
    is_float = np.issubdtype(dist.dtype, np.floating)
    if num_pairs == 0:
        if is_float and np.isnan(dist).any():
            raise _NaNFound
        return num_matches, ap, first_rank, last_rank

    # One entry per (query, gallery image of the same identity), grouped by query.
    pair_q = np.repeat(np.arange(num_q), num_same_id)
    seg_start = np.cumsum(num_same_id) - num_same_id
    pair_g = g_by_pid[np.arange(num_pairs) - np.repeat(seg_start - lo, num_same_id)]
    values = dist[pair_q, pair_g]
    if same_camera_filter:
        junk = g_camids[pair_g] == q_camids[pair_q]
    else:
        junk = np.zeros(num_pairs, dtype=bool)

    pos = _positions(dist, pair_q, pair_g, values)

    # Order the pairs of each query by position (positions in a row are distinct).
    by_rank = np.argsort(pair_q * np.int64(num_g) + pos)
    pair_q, pos, junk = pair_q[by_rank], pos[by_rank], junk[by_rank]
    is_match = ~junk
    # Removed (junk) images ranked before each pair, and 1-based index of each true match.
    junk_cum = np.concatenate(([0], np.cumsum(junk)))
    match_cum = np.concatenate(([0], np.cumsum(is_match)))
    start = seg_start[pair_q]
    idx = np.arange(num_pairs)
    kept_rank = pos - (junk_cum[idx] - junk_cum[start])
    match_index = match_cum[idx + 1] - match_cum[start]

    q_m = pair_q[is_match]
    rank_m = kept_rank[is_match]
    index_m = match_index[is_match]
    num_matches = np.bincount(q_m, minlength=num_q)
    precision = index_m / (rank_m + 1.0)
    ap = np.bincount(q_m, weights=precision, minlength=num_q) / np.maximum(num_matches, 1)
    is_first = index_m == 1
    first_rank[q_m[is_first]] = rank_m[is_first]
    is_last = index_m == num_matches[q_m]
    last_rank[q_m[is_last]] = rank_m[is_last]
    return num_matches, ap, first_rank, last_rank


def _positions(
    dist: np.ndarray, pair_q: np.ndarray, pair_g: np.ndarray, values: np.ndarray
) -> np.ndarray:
    """Position of each pair's gallery image in the ``np.argsort`` order of its row.

    Without ties it is the number of strictly smaller distances in the row (a binary search in
    the sorted row); rows where a pair's distance is tied are ranked with ``np.argsort`` itself.
    """
    num_q, num_g = dist.shape
    sorted_rows = np.sort(dist, axis=1)
    if np.issubdtype(dist.dtype, np.floating) and np.isnan(sorted_rows[:, -1]).any():
        raise _NaNFound  # np.sort puts NaN last: checking the last column is enough
    pos = _count_less(sorted_rows, pair_q, values)
    after = np.minimum(pos + 1, num_g - 1)
    tied = (pos + 1 < num_g) & (sorted_rows[pair_q, after] == values)
    del sorted_rows
    if tied.any():
        tie_rows = np.unique(pair_q[tied])
        order = np.argsort(dist[tie_rows], axis=1)
        inverse = np.empty_like(order)
        np.put_along_axis(inverse, order, np.broadcast_to(np.arange(num_g), order.shape), axis=1)
        del order
        row_is_tied = np.zeros(num_q, dtype=bool)
        row_is_tied[tie_rows] = True
        sel = row_is_tied[pair_q]
        pos[sel] = inverse[np.searchsorted(tie_rows, pair_q[sel]), pair_g[sel]]
    return pos


def _count_less(sorted_rows: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Number of entries smaller than ``values[i]`` in the sorted row ``sorted_rows[rows[i]]``.

    A binary search run for all values at once (``np.searchsorted`` works on one row only).
    """
    num_cols = sorted_rows.shape[1]
    flat = sorted_rows.reshape(-1)
    last_of_row = rows.astype(np.int64) * num_cols - 1
    count = np.zeros(len(values), dtype=np.int64)
    step = 1 << (num_cols.bit_length() - 1)
    while step:
        candidate = count + step
        # Accept the step if the candidate-th smallest entry (1-based) is still < value.
        ok = (candidate <= num_cols) & (
            flat[last_of_row + np.minimum(candidate, num_cols)] < values
        )
        count[ok] = candidate[ok]
        step >>= 1
    return count


def _chunk_bounds(
    num_same_id: np.ndarray, num_g: int, itemsize: int, chunk_bytes: int, num_workers: int
) -> list[int]:
    """Query index bounds of chunks whose working memory is about ``chunk_bytes / num_workers``."""
    num_q = len(num_same_id)
    budget = max(1, chunk_bytes // num_workers)
    cost = num_g * (itemsize + _ROW_EXTRA_BYTES) + num_same_id.astype(np.int64) * _PAIR_BYTES
    cum = np.cumsum(cost)
    max_rows = -(-num_q // num_workers)  # at least num_workers chunks when there are threads
    bounds = [0]
    while bounds[-1] < num_q:
        start = bounds[-1]
        used = int(cum[start - 1]) if start else 0
        stop = int(np.searchsorted(cum, used + budget, side="right"))
        bounds.append(min(max(stop, start + 1), start + max_rows, num_q))
    return bounds


def _to_numpy(x: ArrayLike, name: str) -> np.ndarray:
    """Convert a torch tensor or array-like to a numpy array (tensors via ``.cpu().numpy()``)."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # e.g. ragged nested lists
        raise EvaluationError(f"{name} cannot be converted to a numpy array: {exc}") from exc


def _validate(
    dist: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
) -> None:
    """Raise :class:`EvaluationError` with a clear message if the inputs do not fit together."""
    if dist.ndim != 2:
        raise EvaluationError(
            f"distmat must be 2-D (num_query, num_gallery), got shape {dist.shape}"
        )
    num_q, num_g = dist.shape
    if num_q == 0 or num_g == 0:
        raise EvaluationError(
            f"distmat has shape {dist.shape}: need at least one query and one gallery image"
        )
    if not (np.issubdtype(dist.dtype, np.floating) or np.issubdtype(dist.dtype, np.integer)):
        raise EvaluationError(f"distmat must hold real numbers, got dtype {dist.dtype}")
    for name, arr, expected, axis in (
        ("q_pids", q_pids, num_q, "rows (queries)"),
        ("q_camids", q_camids, num_q, "rows (queries)"),
        ("g_pids", g_pids, num_g, "columns (gallery images)"),
        ("g_camids", g_camids, num_g, "columns (gallery images)"),
    ):
        if arr.ndim != 1 or len(arr) != expected:
            raise EvaluationError(
                f"{name} must be 1-D with one entry per distmat {axis}: distmat has shape "
                f"{dist.shape} but {name} has shape {arr.shape}"
            )


class _NaNFound(Exception):
    """Raised by a chunk whose sorted rows end with NaN; turned into an EvaluationError."""


def _nan_message(dist: np.ndarray) -> str:
    """Describe the NaN entries of ``dist``."""
    nan = np.isnan(dist)
    q, g = np.argwhere(nan)[0]
    return (
        f"distmat contains {int(nan.sum())} NaN distances (first at query {q}, gallery {g}). "
        "NaN usually comes from NaN features (a diverged model) or from normalising all-zero "
        "features; check the features before computing distances."
    )


def _no_valid_query_message(num_q: int, num_same_id: np.ndarray, same_camera_filter: bool) -> str:
    """Explain why no query has a true match and what to check."""
    absent = int((num_same_id == 0).sum())
    lines = [f"No query has a true match in the gallery, so nothing can be evaluated: of {num_q} "]
    if not same_camera_filter or absent == num_q:
        lines.append("queries, none has its identity in the gallery at all. ")
    else:
        lines.append(
            f"queries, {absent} have an identity absent from the gallery and {num_q - absent} "
            "find their identity only under their own camera (those gallery images are removed "
            "by the same-identity-same-camera rule; same_camera_filter=False keeps them). "
        )
    lines.append(
        "Check that q_pids and g_pids use the same labels (not relabelled separately per split), "
        "that q_camids and g_camids are the cameras parsed from the file names, and that the query "
        "and gallery arguments are not swapped."
    )
    return "".join(lines)
