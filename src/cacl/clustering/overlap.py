"""Overlaps ``s(i, j) = sum_k min(V[i, k], V[j, k])`` of k-reciprocal encodings, chunk by chunk.

Only pairs that share a column of ``V`` overlap. The inverted index of ``V`` lists, for each column
``k``, the rows ``j`` that store it; for a chunk of rows ``i``, every stored ``V[i, k]`` *meets*
every ``V[j, k]`` of its column, and the meetings' ``min(V[i, k], V[j, k])`` are summed per pair
``(i, j)``. The sum is one sparse product ``A @ P``: ``A`` holds the minima, one column per entry of
the inverted index, and ``P`` maps each entry of the index to its row ``j``; scipy's compiled
product accumulates the pairs without sorting anything.

Meetings can be restricted to ``j >= i`` (the overlap is symmetric) and to pairs of the same group
(e.g. the same cluster, for the refinement sums). Chunks hold a bounded number of meetings, so the
memory is that of the answer plus O(chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import scipy.sparse as sp

from cacl.cores import usable_cores

#: Meetings ``(i, k, j)`` per chunk (about 20 bytes each while a chunk is processed).
MEETINGS_PER_CHUNK = 1 << 22
#: Chunks processed at the same time (numpy and scipy's sparse product release the GIL).
MAX_THREADS = 4

T = TypeVar("T")
R = TypeVar("R")


def map_chunks(function: Callable[[T], R], chunks: Iterable[T]) -> Iterator[R]:
    """``map(function, chunks)`` on up to :data:`MAX_THREADS` threads, results in order."""
    threads = max(1, min(MAX_THREADS, usable_cores()))
    if threads == 1:
        yield from map(function, chunks)
        return
    with ThreadPoolExecutor(threads) as pool:
        yield from pool.map(function, chunks)


class ColumnIndex:
    """The inverted index of an encoding ``V``, optionally split by a group label of the rows.

    Args:
        v: ``N x N`` CSR encoding.
        group: optional int labels of the rows; meetings then only happen between rows of the same
            group, and rows of a negative group take no part at all.
    """

    def __init__(self, v: sp.csr_matrix, group: np.ndarray | None = None) -> None:
        self.v = v
        self.n = v.shape[0]
        nnz = v.nnz
        # The transpose, carrying the id (CSR position) of every entry of V: column-major order,
        # rows ascending within a column (a counting sort, no comparison sort).
        ids = sp.csr_matrix((np.arange(1, nnz + 1, dtype=np.int64), v.indices, v.indptr), v.shape)
        ids = ids.T.tocsr()
        ids.sort_indices()
        entry = ids.data - 1
        rows = ids.indices.astype(np.int64)
        bucket_key = np.repeat(np.arange(ids.shape[0], dtype=np.int64), np.diff(ids.indptr))
        del ids
        if group is not None:
            group = np.asarray(group, dtype=np.int64)
            g = group[rows]
            keep = g >= 0
            entry, rows, g, bucket_key = entry[keep], rows[keep], g[keep], bucket_key[keep]
            order = np.lexsort((rows, g, bucket_key))  # column, then group, then row
            entry, rows = entry[order], rows[order]
            bucket_key = bucket_key[order] * (int(group.max()) + 1) + g[order]
        first = np.ones(bucket_key.size, dtype=bool)
        first[1:] = bucket_key[1:] != bucket_key[:-1]
        bucket_start = np.flatnonzero(first)
        del bucket_key
        #: Bucket (a column, or a column within a group) of every entry of the index.
        self.bucket = np.cumsum(first) - 1
        self.bucket_begin = bucket_start
        self.bucket_end = np.append(bucket_start[1:], rows.size)
        self.value = v.data[entry]
        #: Where each entry of V sits in the index (-1: left out by its group).
        self.position = np.full(nnz, -1, dtype=np.int64)
        self.position[entry] = np.arange(entry.size)
        index_dtype = np.int32 if max(entry.size, self.n) < np.iinfo(np.int32).max else np.int64
        self.index_dtype = index_dtype
        self.to_row = sp.csr_matrix(
            (
                np.ones(entry.size, dtype=np.float32),
                rows.astype(index_dtype),
                np.arange(entry.size + 1, dtype=index_dtype),
            ),
            shape=(entry.size, self.n),
        )

    def _meetings(
        self, start: int, stop: int, upper: bool, min_row: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(row, first, count, value)`` of the entries of rows ``[start, stop)`` taking part.

        The meetings of an entry are the index positions ``first .. first + count - 1`` of its
        bucket: from its own position when ``upper`` (rows ascend within a bucket), and from the
        first row ``>= min_row``.
        """
        v = self.v
        p0, p1 = v.indptr[start], v.indptr[stop]
        row = np.repeat(np.arange(start, stop, dtype=np.int64), np.diff(v.indptr[start : stop + 1]))
        position = self.position[p0:p1]
        if (position < 0).any():
            keep = position >= 0
            row, position = row[keep], position[keep]
        bucket = self.bucket[position]
        first = position if upper else self.bucket_begin[bucket]
        if min_row > 0:
            first = np.maximum(first, self._first_at_least(min_row)[bucket])
        count = np.maximum(self.bucket_end[bucket] - first, 0)
        return row, first, count, self.value[position]

    def _first_at_least(self, min_row: int) -> np.ndarray:
        """Index position of the first row ``>= min_row`` of every bucket (or its end)."""
        below = np.concatenate([[0], np.cumsum(self.to_row.indices < min_row)])
        return self.bucket_begin + below[self.bucket_end] - below[self.bucket_begin]

    def row_chunks(self, upper: bool = True, min_row: int = 0) -> Iterator[slice]:
        """Consecutive row ranges of at most about :data:`MEETINGS_PER_CHUNK` meetings each."""
        row, _, count, _ = self._meetings(0, self.n, upper, min_row)
        total = np.concatenate([[0.0], np.cumsum(np.bincount(row, count, minlength=self.n))])
        a = 0
        while a < self.n:
            b = int(np.searchsorted(total, total[a] + MEETINGS_PER_CHUNK, side="right")) - 1
            b = min(max(b, a + 1), self.n)
            yield slice(a, b)
            a = b

    def overlap(self, start: int, stop: int, upper: bool = True, min_row: int = 0) -> sp.csr_matrix:
        """``s(i, j)`` for rows ``i`` in ``[start, stop)``: a ``(stop - start) x N`` CSR matrix.

        Args:
            start, stop: the rows.
            upper: only pairs ``j >= i`` (else all ``j``).
            min_row: only pairs ``j >= min_row``.

        Returns:
            float32 CSR matrix of the pairs that overlap (indices not sorted); with a group, only
            pairs of the same group, and rows of a negative group are empty.
        """
        row, first, count, value = self._meetings(start, stop, upper, min_row)
        dtype = self.index_dtype
        offset = np.repeat((first - (np.cumsum(count) - count)).astype(dtype), count)
        position = offset + np.arange(offset.size, dtype=dtype)  # meetings, entry by entry
        del offset
        minimum = np.minimum(np.repeat(value, count), self.value[position])
        per_row = np.bincount(row - start, weights=count, minlength=stop - start)
        indptr = np.concatenate([[0], np.cumsum(per_row.astype(np.int64))]).astype(dtype)
        meetings = sp.csr_matrix(
            (minimum, position, indptr), shape=(stop - start, self.to_row.shape[0])
        )
        return (meetings @ self.to_row).tocsr()
