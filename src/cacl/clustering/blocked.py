"""Exact k nearest neighbours by blocked matrix products over the upper triangle.

The distance matrix is symmetric, so only the tiles on and above the diagonal are computed
(``block x block`` each) and every tile updates the neighbour lists of its rows *and* of its
columns: about half the arithmetic of a plain search, and memory of one tile plus O(N·k).

- On the CPU the tiles are numpy (BLAS) products into one reused buffer. After a row's first tile
  the k-th distance seen so far bounds what can still enter its list, and only the entries below
  that bound are kept as candidates (a comparison and a ``nonzero``), which are merged now and
  then: much cheaper than a top-k of every tile.
- On a GPU the tiles are torch products; the k best of each tile go to a per-row buffer that is
  cut back to the k best when full.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

#: Called with ``(row_start, col_start, tile)`` for every computed tile of the distance matrix;
#: the tile is only valid during the call (its memory is reused).
BlockCallback = Callable[[int, int, torch.Tensor], None]


def blocked_knn(
    x: torch.Tensor,
    k: int,
    *,
    squared_norms: bool,
    block: int,
    farthest: bool = False,
    on_block: BlockCallback | None = None,
    exclude_groups: np.ndarray | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``(indices, distances, farthest)`` of the ``k`` nearest rows of every row of ``x``.

    Args:
        x: ``(N, D)`` float32 features.
        k: neighbours per row (at most N).
        squared_norms: distances ``||x_i||^2 + ||x_j||^2 - 2<x_i, x_j>`` (else ``2 - 2<x_i, x_j>``,
            the same for unit rows).
        block: tile size.
        farthest: also return each row's largest distance.
        on_block: called with every tile.
        exclude_groups: ``(N,)`` integer group of every row (e.g. its camera): pairs of one group
            are never neighbours (their distance counts as infinite), so each row gets its ``k``
            nearest rows of *other* groups; rows with fewer candidates keep ``inf`` distances in
            their last columns. Tiles whose rows and columns all share one group are skipped.
        progress: show a progress bar.
    """
    n = x.shape[0]
    block = -(-n // -(-n // block))  # balanced: the last tile is not a sliver
    starts = list(range(0, n, block))
    tiles = [(a, c) for a in starts for c in starts if c >= a]
    if x.device.type == "cpu":
        lists: _CpuLists | _DeviceLists = _CpuLists(n, k, block)
        x_np = x.numpy()
        sq = (x_np * x_np).sum(axis=1) if squared_norms else None
        buffer = np.empty((min(block, n), min(block, n)), dtype=np.float32)
    else:
        lists = _DeviceLists(n, k, block, x.device)
        sq_t = (x * x).sum(dim=1) if squared_norms else None
    far = np.full(n, -np.inf, dtype=np.float32) if farthest else None
    groups = None if exclude_groups is None else np.asarray(exclude_groups, dtype=np.int64)
    if groups is not None and on_block is not None:
        raise ValueError("exclude_groups and on_block cannot be combined")
    for a, c in tqdm(tiles, desc="knn tiles", disable=not progress, leave=False):
        same = None
        if groups is not None:
            ga, gc = groups[a : a + block], groups[c : c + block]
            if ga.min() == ga.max() == gc.min() == gc.max():
                continue  # one group only: nothing to offer
            same = ga[:, None] == gc[None, :]
        if x.device.type == "cpu":
            xa, xc = x_np[a : a + block], x_np[c : c + block]
            tile = buffer[: xa.shape[0], : xc.shape[0]]
            np.matmul(xa, xc.T, out=tile)
            tile *= -2.0
            if sq is None:
                tile += 2.0
            else:
                tile += sq[a : a + block, None]
                tile += sq[None, c : c + block]
            d = torch.from_numpy(tile)
        elif sq_t is None:
            d = torch.mm(x[a : a + block], x[c : c + block].T).mul_(-2.0).add_(2.0)
        else:
            norms = sq_t[a : a + block, None] + sq_t[None, c : c + block]
            d = torch.addmm(norms, x[a : a + block], x[c : c + block].T, alpha=-2.0)
        if same is not None and same.any():
            d.masked_fill_(torch.from_numpy(same).to(d.device), math.inf)
        lists.add(a, c, d)
        if far is not None:
            rows, cols = slice(a, a + d.shape[0]), slice(c, c + d.shape[1])
            far[rows] = np.maximum(far[rows], d.amax(dim=1).cpu().numpy())
            far[cols] = np.maximum(far[cols], d.amax(dim=0).cpu().numpy())
        if on_block is not None:
            on_block(a, c, d)
    indices, distances = lists.result()
    return indices, distances, far


class _CpuLists:
    """Neighbour lists fed by tiles: bounded candidates, merged block by block."""

    def __init__(self, n: int, k: int, block: int) -> None:
        self.n, self.k, self.block = n, k, block
        self.best_d = np.full((n, k), np.inf, dtype=np.float32)
        self.best_i = np.zeros((n, k), dtype=np.int64)
        self.bound = np.full(n, np.inf, dtype=np.float32)  # k-th best at the last merge
        self.pending: dict[int, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        self.pending_size: dict[int, int] = {}

    def add(self, a: int, c: int, d: torch.Tensor) -> None:
        tile = d.numpy()
        self._add_side(a, c, tile, transposed=False)
        if c != a:
            self._add_side(c, a, tile, transposed=True)

    def _add_side(self, start: int, other: int, tile: np.ndarray, transposed: bool) -> None:
        """Offer the tile to the rows ``start..`` (its columns when ``transposed``)."""
        size = tile.shape[1] if transposed else tile.shape[0]
        bound = self.bound[start : start + size]
        if np.isinf(bound).any():  # a first tile: keep its k best outright
            t = torch.from_numpy(tile)
            kk = min(self.k, tile.shape[0] if transposed else tile.shape[1])
            values, pos = torch.topk(t, kk, dim=0 if transposed else 1, largest=False)
            if transposed:
                values, pos = values.T, pos.T
            row = np.repeat(np.arange(start, start + size), kk)
            self._pend(start, row, pos.numpy().ravel() + other, values.numpy().ravel())
            self._merge(start)
            return
        # flatnonzero is many times faster than a 2-D nonzero.
        flat = np.flatnonzero(tile < (bound[None, :] if transposed else bound[:, None]))
        values = tile.ravel()[flat]
        first, second = np.divmod(flat, tile.shape[1])
        row, col = (second, first) if transposed else (first, second)
        self._pend(start, row + start, col + other, values)
        if self.pending_size[start] > 4 * self.k * size:
            self._merge(start)

    def _pend(self, start: int, row: np.ndarray, col: np.ndarray, values: np.ndarray) -> None:
        self.pending.setdefault(start, []).append((row, col, values))
        self.pending_size[start] = self.pending_size.get(start, 0) + row.size

    def _merge(self, start: int) -> None:
        """Cut the rows ``start..`` back to their k best (current lists plus candidates)."""
        parts = self.pending.pop(start, [])
        self.pending_size[start] = 0
        if not parts:
            return
        rows = slice(start, min(start + self.block, self.n))
        size, k = rows.stop - rows.start, self.k
        row = np.concatenate(
            [np.repeat(np.arange(rows.start, rows.stop), k), *(p[0] for p in parts)]
        )
        col = np.concatenate([self.best_i[rows].ravel(), *(p[1] for p in parts)])
        val = np.concatenate([self.best_d[rows].ravel(), *(p[2] for p in parts)])
        # Sort by (row, value): by value, then a stable sort of the small row offsets (radix).
        order = np.argsort(val)
        offset = (row[order] - rows.start).astype(np.int16 if size < 2**15 else np.int32)
        order = order[np.argsort(offset, kind="stable")]
        row, col, val = row[order], col[order], val[order]
        first = np.searchsorted(row, np.arange(rows.start, rows.stop))
        rank = np.arange(row.size) - np.repeat(first, np.diff(np.append(first, row.size)))
        keep = rank < k
        slot = (row[keep] - rows.start) * k + rank[keep]
        best_d = np.full(size * k, np.inf, dtype=np.float32)
        best_i = np.zeros(size * k, dtype=np.int64)
        best_d[slot], best_i[slot] = val[keep], col[keep]
        self.best_d[rows] = best_d.reshape(size, k)
        self.best_i[rows] = best_i.reshape(size, k)
        self.bound[rows] = self.best_d[rows, -1]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        for start in list(self.pending):
            self._merge(start)
        return self.best_i, self.best_d


class _DeviceLists:
    """Neighbour lists on a GPU: the k best of each tile into a buffer, cut back when full."""

    def __init__(self, n: int, k: int, block: int, device: torch.device) -> None:
        self.k, self.block = k, block
        self.width = 5 * k
        self.cand_d = torch.full((n, self.width), math.inf, dtype=torch.float32, device=device)
        self.cand_i = torch.zeros((n, self.width), dtype=torch.int64, device=device)
        self.filled = {start: 0 for start in range(0, n, block)}

    def add(self, a: int, c: int, d: torch.Tensor) -> None:
        self._add_side(a, d, c)
        if c != a:
            self._add_side(c, d.T, a)

    def _add_side(self, start: int, d: torch.Tensor, first_id: int) -> None:
        kk = min(self.k, d.shape[1])
        new_d, pos = torch.topk(d, kk, dim=1, largest=False, sorted=False)
        if self.filled[start] + kk > self.width:
            self._compact(start)
        rows = slice(start, start + d.shape[0])
        slots = slice(self.filled[start], self.filled[start] + kk)
        self.cand_d[rows, slots] = new_d
        self.cand_i[rows, slots] = pos + first_id
        self.filled[start] += kk

    def _compact(self, start: int) -> None:
        rows, used = slice(start, start + self.block), self.filled[start]
        keep_d, keep = torch.topk(self.cand_d[rows, :used], min(self.k, used), dim=1, largest=False)
        self.cand_i[rows, : keep.shape[1]] = torch.gather(self.cand_i[rows, :used], 1, keep)
        self.cand_d[rows, : keep.shape[1]] = keep_d
        self.filled[start] = keep.shape[1]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        for start in self.filled:
            self._compact(start)
        best_d, order = torch.sort(self.cand_d[:, : self.k], dim=1)
        best_i = torch.gather(self.cand_i[:, : self.k], 1, order)
        return best_i.cpu().numpy(), best_d.cpu().numpy()
