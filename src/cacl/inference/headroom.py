"""Room for a faiss HNSW index to grow before the next add: :func:`reserve_hnsw`.

faiss keeps an HNSW index's vectors and links in ``std::vector``\\ s, which grow by doubling:
the add that passes their capacity copies all of them (512 MB at 10^5 x 1280 float32) into a
new allocation. A live index adds under its write lock, so that one add stalled every search
for 1.7 s in ``benchmarks/bench_serve.py``. Resizing a vector up and back down keeps its
capacity (C++ never shrinks one on ``resize``), so a writable server can pay for the copy once,
at start-up, instead of in the middle of a search. Only vectors faiss owns are touched (not
memory-mapped ones), and their sizes are the same afterwards.
"""

from __future__ import annotations

from typing import Any


def _grow(vector: Any, extra: int) -> None:
    size = vector.size()
    vector.resize(size + extra)  # allocates (and copies) once, to at least size + extra
    vector.resize(size)  # the size back; the capacity stays


def reserve_hnsw(index: Any, rows: int) -> bool:
    """Capacity for ``rows`` more vectors in ``index`` (a ``faiss.IndexHNSWFlat``) and their
    links; answers whether it could (``False``: an index whose memory faiss does not own)."""
    import faiss

    if rows < 1 or index.ntotal == 0:
        return False
    storage = faiss.downcast_index(index.storage)
    codes, hnsw = getattr(storage, "codes", None), index.hnsw
    if codes is None or not codes.is_owned or not hnsw.neighbors.is_owned:
        return False
    _grow(codes, rows * storage.code_size)
    links_per_row = hnsw.neighbors.size() / index.ntotal
    _grow(hnsw.neighbors, int(rows * links_per_row * 1.1) + 64)
    _grow(hnsw.levels, rows)
    _grow(hnsw.offsets, rows)
    return True
