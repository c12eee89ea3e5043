"""Time in the clustering graph (``cluster.time=on``, docs/method.md, "Time as a cue"): every
edge between two cameras has its similarity ``1 - d`` scaled by a factor in ``(0, 1]`` that a
transit-time model gives the pair's cameras and times; same-camera edges are left alone.

The factor never raises a similarity, so an edge only moves away: the sparse graph (which holds
the distances up to ``eps``) loses the edges pushed past ``eps`` and needs none it lacks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from cacl.clustering.tracklets import spans
from cacl.errors import CaclError

#: ``(cams_a, times_a, cams_b, times_b) -> factor`` of every pair (arrays of one shape).
TimeWeight = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def node_times(times: np.ndarray, ids: np.ndarray | None = None) -> np.ndarray:
    """The time of every node: each row's own, or with ``ids`` (0..T-1) the midpoint of each
    tracklet's first and last time (NaN where none of its rows has one)."""
    if ids is None:
        return np.asarray(times, dtype=np.float64)
    first, last = spans(ids, times)
    return (first + last) / 2


def reweight(graph: sp.spmatrix, cameras: np.ndarray, times: np.ndarray, weight: TimeWeight,
             eps: float) -> tuple[sp.csr_matrix, dict[str, float]]:  # fmt: skip
    """``graph`` (distances) with each cross-camera edge ``d`` turned into ``1 - (1 - d) w``
    and the edges past ``eps`` dropped; ``w`` is 1 where either node has no time. Returns the
    graph and what changed (edges seen across cameras, their mean factor, edges dropped)."""
    coo = sp.coo_matrix(graph)
    cameras, times = np.asarray(cameras), np.asarray(times, dtype=np.float64)
    if len(cameras) != coo.shape[0] or len(times) != coo.shape[0]:
        raise CaclError(
            f"time in the clustering needs a camera and a time per node: {coo.shape[0]} nodes, "
            f"{len(cameras)} cameras, {len(times)} times"
        )
    rows, cols, data = coo.row, coo.col, coo.data.astype(np.float64)
    cross = cameras[rows] != cameras[cols]
    known = cross & np.isfinite(times[rows]) & np.isfinite(times[cols])
    factor = np.ones(len(data))
    if known.any():
        r, c = rows[known], cols[known]
        w = np.asarray(weight(cameras[r], times[r], cameras[c], times[c]), dtype=np.float64)
        if w.shape != r.shape or not np.isfinite(w).all() or (w <= 0).any() or (w > 1).any():
            raise CaclError("a time weight must give one factor in (0, 1] per pair")
        factor[known] = w
    data = 1.0 - (1.0 - data) * factor
    keep = (data <= eps) | (rows == cols)
    out = sp.csr_matrix((data[keep].astype(np.float32), (rows[keep], cols[keep])), shape=coo.shape)
    out.sort_indices()
    stats = {
        "time_edges": int(cross.sum()),
        "time_mean_factor": float(factor[cross].mean()) if cross.any() else 1.0,
        "time_edges_dropped": int((~keep).sum()),
    }
    return out, stats
