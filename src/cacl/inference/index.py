"""A searchable gallery of re-ID features: :class:`GalleryIndex`.

Distances are squared Euclidean between the L2-normalised features (``2 - 2 cos``), the distance
``cacl eval`` ranks by. Three kinds of index:

- ``flat``: exact search with PyTorch, the same arithmetic as the evaluation
  (:func:`cacl.evaluation.network.squared_euclidean`, then the k smallest); needs no faiss;
- ``ivf``: faiss ``IndexIVFFlat`` (k-means cells; a query scans ``nprobe`` of ``nlist`` cells);
- ``hnsw``: faiss ``IndexHNSWFlat`` (a proximity graph; ``ef_search`` candidates per query).

``kind="auto"`` takes ``flat`` below ``threshold`` images and :data:`DEFAULT_APPROXIMATE` from
there on. An index is saved as a folder: ``manifest.json`` (kind, size, parameters, the checkpoint
and image size needed to embed queries, the gallery root, the files below), ``names.json`` (image
paths relative to the root, in index order) and ``features.npy`` (flat) or ``index.faiss`` (ivf,
hnsw). The folder is written under a temporary name and renamed into place, so a crash never
leaves half an index.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cacl import __version__
from cacl.errors import CaclError
from cacl.files import chmod_like_new_dir, file_sha256  # noqa: F401 - file_sha256 re-exported

FORMAT = "cacl-index-v1"
MANIFEST, NAMES, FEATURES, FAISS_FILE = "manifest.json", "names.json", "features.npy", "index.faiss"
KINDS = ("auto", "flat", "ivf", "hnsw")
APPROX_THRESHOLD = 100_000  # kind="auto": approximate from this many gallery images on
DEFAULT_APPROXIMATE = "hnsw"
HNSW_M, HNSW_EF_CONSTRUCTION = 32, 80
FLAT_BLOCK = 1 << 25  # distance entries per block of an exact search (128 MB of float32)


class GalleryIndexError(CaclError):
    """An index cannot be built, saved, loaded or searched as asked."""


def _faiss():
    try:
        import faiss
    except ImportError as exc:
        raise GalleryIndexError(
            "approximate indexes (ivf, hnsw) need faiss: pip install 'cacl[faiss]' "
            "(or use the exact flat index)"
        ) from exc
    return faiss


def default_nlist(n: int) -> int:
    """IVF cells: about ``4 sqrt(n)``, with at least 39 training points per cell (faiss' rule)."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def default_nprobe(nlist: int) -> int:
    """Cells scanned per IVF query: one eighth of them, at least 1."""
    return max(1, math.ceil(nlist / 8))


def data_files(kind: str, generation: int = 0) -> dict[str, str]:
    """The names and vector files of an index of ``kind``: ``names.json`` and ``features.npy`` /
    ``index.faiss``; from generation 1 on (a snapshot rewritten in place, see
    :mod:`cacl.inference.snapshot`) ``names.g1.json``, ``index.g1.faiss``, ..."""
    files = {"names": NAMES, "index": FEATURES if kind == "flat" else FAISS_FILE}
    if generation:
        files = {key: f"{Path(n).stem}.g{generation}{Path(n).suffix}" for key, n in files.items()}
    return files


def _as_features(features: torch.Tensor | np.ndarray, what: str = "features") -> np.ndarray:
    array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else features
    array = np.ascontiguousarray(np.asarray(array, dtype=np.float32))
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] == 0:
        raise GalleryIndexError(f"{what} must be an (N, D) array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise GalleryIndexError(f"{what} contain NaN or infinite values")
    return array


class GalleryIndex:
    """Gallery features with their names, searchable by squared Euclidean distance.

    Build with :meth:`build`, search with :meth:`search` (``(distances, indices)``, nearest first)
    or :meth:`search_names`, persist with :meth:`save` / :meth:`load`. ``info`` holds what the
    index is about (checkpoint, image size, gallery root, ...), saved in the manifest.
    """

    def __init__(
        self,
        kind: str,
        names: list[str],
        dim: int,
        params: dict[str, Any],
        info: dict[str, Any],
        features: np.ndarray | None = None,
        faiss_index: Any = None,
    ) -> None:
        self.kind, self.names, self.dim = kind, names, dim
        self.params, self.info = params, info
        self._features, self._faiss = features, faiss_index
        self._gallery_sq: torch.Tensor | None = None
        # flat: rows live in the first len(self) rows of ``_buffer`` (spare capacity for add)
        self._buffer = features

    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        return f"GalleryIndex(kind={self.kind!r}, size={len(self)}, dim={self.dim})"

    # ------------------------------------------------------------------ build

    @classmethod
    def build(
        cls,
        features: torch.Tensor | np.ndarray,
        names: Sequence[str],
        *,
        kind: str = "auto",
        threshold: int = APPROX_THRESHOLD,
        nlist: int | None = None,
        nprobe: int | None = None,
        hnsw_m: int = HNSW_M,
        ef_search: int = 128,
        info: dict[str, Any] | None = None,
    ) -> GalleryIndex:
        """Index ``features`` (N, D) whose rows belong to ``names``.

        ``kind`` is ``flat``, ``ivf``, ``hnsw`` or ``auto`` (flat below ``threshold`` images,
        else :data:`DEFAULT_APPROXIMATE`). IVF: ``nlist`` cells (default :func:`default_nlist`),
        ``nprobe`` scanned per query (default :func:`default_nprobe`). HNSW: ``hnsw_m`` links per
        node, ``ef_search`` candidates per query (at least ``k``).
        """
        if kind not in KINDS:
            raise GalleryIndexError(f"index kind must be one of {', '.join(KINDS)}, got {kind!r}")
        x = _as_features(features)
        names = [str(n) for n in names]
        if len(names) != len(x):
            raise GalleryIndexError(f"{len(x)} feature rows but {len(names)} names")
        if len(x) == 0:
            raise GalleryIndexError("no features to index")
        for name, value in (("nprobe", nprobe), ("ef_search", ef_search), ("hnsw_m", hnsw_m)):
            if value is not None and value < 1:
                raise GalleryIndexError(f"{name} must be at least 1, got {value}")
        if kind == "auto":
            kind = "flat" if len(x) < threshold else DEFAULT_APPROXIMATE
        info = dict(info or {})
        if kind == "flat":
            return cls("flat", names, x.shape[1], {}, info, features=x)
        faiss = _faiss()
        d = x.shape[1]
        if kind == "ivf":
            nlist = nlist or default_nlist(len(x))
            if not 1 <= nlist <= len(x):
                raise GalleryIndexError(f"nlist must be between 1 and {len(x)}, got {nlist}")
            quantizer = faiss.IndexFlatL2(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_L2)
            index.train(x)
            index.add(x)  # faiss' Python wrapper keeps ``quantizer`` alive with ``index``
            params = {"nlist": nlist, "nprobe": min(nprobe or default_nprobe(nlist), nlist)}
        else:
            index = faiss.IndexHNSWFlat(d, hnsw_m, faiss.METRIC_L2)
            index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index.add(x)
            params = {"m": hnsw_m, "ef_construction": HNSW_EF_CONSTRUCTION, "ef_search": ef_search}
        return cls(kind, names, d, params, info, faiss_index=index)

    # ------------------------------------------------------------------ search

    def search(
        self, features: torch.Tensor | np.ndarray, k: int = 10
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest gallery rows of each query row: ``(distances, indices)``, both
        ``(Q, min(k, N))``, nearest first; an approximate index may find fewer than ``k``, the
        rest of the row is then ``inf`` / ``-1``."""
        q = _as_features(features, "query features")
        if q.shape[1] != self.dim:
            raise GalleryIndexError(
                f"query features have {q.shape[1]} dimensions, the index {self.dim}"
            )
        if k < 1:
            raise GalleryIndexError(f"k must be at least 1, got {k}")
        k = min(k, len(self))
        if self.kind == "flat":
            return self._search_flat(q, k)
        # per-call parameters, not the index's own fields: concurrent searches may differ in k
        faiss = _faiss()
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF(nprobe=self.params["nprobe"])
        else:
            params = faiss.SearchParametersHNSW(efSearch=max(self.params["ef_search"], k))
        distances, indices = self._faiss.search(q, k, params=params)
        distances = np.where(indices < 0, np.inf, np.maximum(distances, 0)).astype(np.float32)
        return distances, indices.astype(np.int64)

    def _search_flat(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # cacl.evaluation.network.squared_euclidean's arithmetic, |q|^2 + |g|^2 - 2 q.g in float32,
        # with |g|^2 computed once per index instead of once per query
        gallery = torch.from_numpy(self._features)
        if self._gallery_sq is None:
            self._gallery_sq = (gallery * gallery).sum(1).unsqueeze(0)
        rows = max(1, FLAT_BLOCK // len(self))
        out_d, out_i = [], []
        for start in range(0, len(q), rows):
            block = torch.from_numpy(q[start : start + rows])
            dist = (
                (block * block).sum(1, keepdim=True) + self._gallery_sq - 2.0 * block @ gallery.t()
            )
            values, indices = dist.clamp_min_(0).topk(k, dim=1, largest=False, sorted=True)
            out_d.append(values.numpy())
            out_i.append(indices.numpy())
        return np.concatenate(out_d), np.concatenate(out_i).astype(np.int64)

    def vector(self, row: int) -> np.ndarray:
        """The stored feature of gallery row ``row`` (a ``(D,)`` float32 array)."""
        if not 0 <= row < len(self):
            raise GalleryIndexError(f"row {row} is outside the index (0..{len(self) - 1})")
        if self.kind == "flat":
            return self._features[row].copy()
        try:
            return self._faiss.reconstruct(int(row))
        except RuntimeError:  # an IVF index needs its direct map first
            self._faiss.make_direct_map()
            return self._faiss.reconstruct(int(row))

    def reserve(self, rows: int) -> bool:
        """Make room for ``rows`` more images now, so that the adds up to them copy nothing
        (flat, hnsw; :mod:`cacl.inference.headroom`); answers whether room was made."""
        if rows < 1:
            return False
        if self.kind == "flat":
            n = len(self)
            if self._buffer is not None and len(self._buffer) >= n + rows:
                return True
            grown = np.empty((n + rows, self.dim), dtype=np.float32)
            grown[:n] = self._features
            self._buffer, self._features = grown, grown[:n]
            return True
        if self.kind == "hnsw":
            from cacl.inference.headroom import reserve_hnsw

            return reserve_hnsw(self._faiss, rows)
        return False

    def add(self, features: torch.Tensor | np.ndarray, names: Sequence[str]) -> None:
        """Append ``features`` (M, D) with their ``names`` in place, without rebuilding.

        Not thread-safe: callers that search from other threads hold one lock around both
        (:class:`cacl.inference.live.LiveIndex` does). A flat index grows a buffer by doubling,
        so an add copies the gallery only when the buffer is full; an HNSW index links the new
        nodes into its graph; an IVF index files them into its trained cells.
        """
        x = _as_features(features)
        names = [str(n) for n in names]
        if len(names) != len(x):
            raise GalleryIndexError(f"{len(x)} feature rows but {len(names)} names")
        if x.shape[1] != self.dim:
            raise GalleryIndexError(f"features have {x.shape[1]} dimensions, the index {self.dim}")
        if len(x) == 0:
            return
        if self.kind == "flat":
            n, m = len(self), len(x)
            if self._buffer is None or len(self._buffer) < n + m:
                grown = np.empty((max(2 * n, n + m, 1024), self.dim), dtype=np.float32)
                grown[:n] = self._features
                self._buffer = grown
            self._buffer[n : n + m] = x
            self._features = self._buffer[: n + m]
            if self._gallery_sq is not None:
                extra = torch.from_numpy(x).pow(2).sum(1).unsqueeze(0)
                self._gallery_sq = torch.cat([self._gallery_sq, extra], 1)
        else:
            self._faiss.add(x)
        self.names = [*self.names, *names]  # a new list: a reader's old list stays whole

    def search_names(
        self, features: torch.Tensor | np.ndarray, k: int = 10
    ) -> list[list[tuple[str, float]]]:
        """:meth:`search` as ``(name, distance)`` lists, one per query, nearest first."""
        distances, indices = self.search(features, k)
        return [
            [(self.names[i], float(d)) for d, i in zip(drow, irow) if i >= 0]
            for drow, irow in zip(distances, indices)
        ]

    # ------------------------------------------------------------------ persistence

    def manifest(self, files: dict[str, str] | None = None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kind": self.kind,
            "count": len(self),
            "dim": self.dim,
            "distance": "squared_euclidean",
            "params": self.params,
            "files": files or data_files(self.kind),
            "cacl_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **self.info,
        }

    def write_data(self, folder: Path, generation: int = 0) -> dict[str, str]:
        """Write the names and the vectors into ``folder`` as the files of ``generation``
        (:func:`data_files`), each ``fsync``ed; answer the manifest's ``files``."""
        files = data_files(self.kind, generation)
        if self.kind == "flat":
            np.save(folder / files["index"], self._features)
        else:
            _faiss().write_index(self._faiss, str(folder / files["index"]))
        (folder / files["names"]).write_text(json.dumps(self.names, ensure_ascii=False))
        for name in files.values():
            with open(folder / name, "rb") as handle:
                os.fsync(handle.fileno())
        return files

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the index folder atomically; an existing index is replaced only with
        ``overwrite``, and a non-empty folder that is not an index never."""
        folder = Path(folder)
        existing = folder.exists() and (not folder.is_dir() or any(folder.iterdir()))
        if existing:
            if not (folder / MANIFEST).is_file():
                raise GalleryIndexError(
                    f"{folder} exists and is not a cacl index; not replacing it"
                )
            if not overwrite:
                raise GalleryIndexError(f"{folder} already holds an index; use --overwrite")
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        chmod_like_new_dir(tmp)
        try:
            files = self.write_data(tmp)
            (tmp / MANIFEST).write_text(json.dumps(self.manifest(files), indent=2) + "\n")
            with open(tmp / MANIFEST, "rb") as handle:
                os.fsync(handle.fileno())
            if folder.exists():
                old = Path(
                    tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent)
                )
                os.replace(folder, old / "index")
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> GalleryIndex:
        """Read an index folder written by :meth:`save`, checking that its parts agree."""
        folder = Path(folder)
        if not folder.is_dir():
            raise GalleryIndexError(f"index folder not found: {folder}")
        if not (folder / MANIFEST).is_file():
            raise GalleryIndexError(f"{folder} is not a cacl index (no {MANIFEST})")
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise GalleryIndexError(f"cannot read index {folder}: {exc}") from exc
        if manifest.get("format") != FORMAT:
            raise GalleryIndexError(f"{folder}: unknown index format {manifest.get('format')!r}")
        kind, dim = manifest["kind"], int(manifest["dim"])
        files = {**data_files(kind), **(manifest.get("files") or {})}
        for name in files.values():  # plain names of files in this folder, nothing else
            if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
                raise GalleryIndexError(f"{folder}/{MANIFEST} names a file {name!r}")
        try:
            names = json.loads((folder / files["names"]).read_text())
        except (OSError, ValueError) as exc:
            raise GalleryIndexError(f"cannot read index {folder}: {exc}") from exc
        keys = ("format", "kind", "count", "dim", "distance", "params", "files", "cacl_version")
        keys += ("generation",)  # of the files, not of what the index is about
        info = {k: v for k, v in manifest.items() if k not in keys}
        features = faiss_index = None
        try:
            if kind == "flat":
                features = np.load(folder / files["index"])
                size, stored_dim = features.shape
            else:
                faiss_index = _faiss().read_index(str(folder / files["index"]))
                size, stored_dim = faiss_index.ntotal, faiss_index.d
        except (OSError, ValueError, RuntimeError) as exc:
            raise GalleryIndexError(f"cannot read index {folder}: {exc}") from exc
        if not size == len(names) == manifest["count"] or stored_dim != dim:
            raise GalleryIndexError(
                f"{folder} is inconsistent: {size} vectors of {stored_dim} dimensions, "
                f"{len(names)} names, manifest {manifest['count']} x {dim}"
            )
        return cls(kind, names, dim, manifest["params"], info, features, faiss_index)
