"""Query crops uploaded for a search, kept so that the search can be shared by its URL.

``POST /api/search`` stores the crop as ``queries/<id><ext>`` in the index folder, where ``id``
is the first 24 hex digits of its SHA-256 (the same crop, the same id), and answers the id; the
page puts ``query=<id>`` in its URL and ``GET /api/search?query=<id>`` searches with it again.
Query crops are not part of the gallery: they are never searched, only searched with. The
features of recent ids are kept in memory.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from cacl.inference.image_bytes import CONTENT_TYPES

QUERIES = "queries"
ID_PATTERN = re.compile(r"[0-9a-f]{24}")


class QueryStore:
    """Crops by id, and an LRU cache of their features."""

    def __init__(self, folder: Path, cache_size: int = 512) -> None:
        self.folder, self.cache_size = folder / QUERIES, cache_size
        self._features: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def id_of(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()[:24]

    def save(self, data: bytes, ext: str) -> str:
        query_id = self.id_of(data)
        if self.path_of(query_id) is None:
            self.folder.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".query-", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self.folder / f"{query_id}{ext}")
        return query_id

    def path_of(self, query_id: str) -> Path | None:
        """The stored crop of a well-formed id, or ``None``."""
        if not ID_PATTERN.fullmatch(query_id):
            return None
        for ext in dict.fromkeys(CONTENT_TYPES):
            path = self.folder / f"{query_id}{ext}"
            if path.is_file():
                return path
        return None

    def features(self, query_id: str) -> np.ndarray | None:
        with self._lock:
            found = self._features.get(query_id)
            if found is not None:
                self._features.move_to_end(query_id)
            return found

    def remember(self, query_id: str, feature: np.ndarray) -> None:
        with self._lock:
            self._features[query_id] = feature
            self._features.move_to_end(query_id)
            while len(self._features) > self.cache_size:
                self._features.popitem(last=False)
