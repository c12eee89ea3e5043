"""An index folder that grows while it is searched: :class:`LiveIndex`.

A live index is the snapshot :class:`~cacl.inference.index.GalleryIndex` saved in the folder
plus the images added since, replayed from the folder's journal
(:mod:`cacl.inference.journal`) when it is opened. Adding images never rebuilds the snapshot:

1. each new image's bytes are written into the index folder, under ``added/`` (a temporary
   file, ``fsync``, rename, ``fsync`` of the folder), named ``added/<stem>-<sha256[:12]><ext>``
   after its content, so the same image added twice keeps one name and one row;
2. one journal record with the names, cameras and features of the whole batch is appended and
   ``fsync``ed: this is the commit point; an add is acknowledged (returns) only after it;
3. the rows are appended to the in-memory index under the write side of a readers-writer
   lock, so a concurrent search sees the index before or after the batch, never part of it.

A crash before step 2 completes leaves at most files under ``added/`` that no record names:
they are never served (only indexed names are) and a retry of the same image reuses them. A
crash during step 2 leaves a torn record that the next open ignores and cuts off. Everything
acknowledged is in a committed record, so it survives a kill -9 of the process right after.

Names of the snapshot's images are relative to the gallery root recorded in the manifest; names
of added images are relative to the index folder. :meth:`LiveIndex.file_of` maps an indexed
name to its file and nothing else to anything.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from cacl.data.readers.folder import DEFAULT_CAM_REGEX
from cacl.inference.cameras import camera_from_name, compile_cam_regex, gallery_cameras
from cacl.inference.index import GalleryIndex, GalleryIndexError
from cacl.inference.journal import Journal, Record, fsync_dir
from cacl.inference.snapshot import rewrite_snapshot

log = logging.getLogger(__name__)

ADDED = "added"  # sub-folder of the index folder holding the added images


@dataclass(frozen=True)
class Hit:
    """One search result."""

    name: str
    distance: float
    camera: str | None


@dataclass(frozen=True)
class NewImage:
    """An image to add: its encoded bytes (a checked, decodable image), the file name it came
    with (for its stem and camera), its extension (``.jpg``, ...) and an optional camera."""

    data: bytes
    filename: str
    ext: str
    camera: str | None = None


@dataclass(frozen=True)
class Added:
    """What an add did with one image: its indexed name, its camera, and whether it is new."""

    name: str
    camera: str | None
    new: bool


def added_name(image: NewImage) -> str:
    """``added/<stem>-<sha256[:12]><ext>``: safe characters only, the same for the same bytes."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", PurePosixPath(image.filename).stem).strip("._")
    digest = hashlib.sha256(image.data).hexdigest()[:12]
    return f"{ADDED}/{stem[:64] or 'image'}-{digest}{image.ext.lower()}"


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer holds new readers back."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _safe_relative(name: str) -> bool:
    """A relative POSIX path without ``..``, ``.`` or empty parts (and no backslashes)."""
    parts = name.split("/")
    return (
        bool(name)
        and "\\" not in name
        and "\x00" not in name
        and all(p not in ("", ".", "..") for p in parts)
    )


def _write_durably(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` after a crash too: temporary file, fsync, rename, fsync folder."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class LiveIndex:
    """An index folder with its journal: search by feature or by name, add images durably.

    Open with :meth:`open` (``writable=True`` takes the folder's writer lock; one writer process
    at a time). Thread-safe: searches run in parallel, adds one at a time and atomically.
    """

    def __init__(
        self,
        folder: Path,
        index: GalleryIndex,
        cameras: list[str | None],
        journal: Journal | None,
        cam_regex: str,
        base_size: int,
    ) -> None:
        self.folder, self.index, self.journal = folder, index, journal
        self.base_size = base_size  # rows of the snapshot; the rest are in the journal
        # rows from the gallery root; the rest were added (a compacted snapshot holds some)
        self.gallery_rows = int(index.info.get("gallery_rows", base_size))
        self._cameras = cameras
        self._rows = {name: row for row, name in enumerate(index.names)}
        self._by_digest = {_digest(n): n for n in index.names[self.gallery_rows :]}
        self.pattern = compile_cam_regex(cam_regex)  # cameras of added file names
        self._rw = _ReadWriteLock()
        self._add_lock = threading.Lock()

    @classmethod
    def open(
        cls, folder: str | os.PathLike, *, writable: bool = False, cam_regex: str | None = None
    ) -> LiveIndex:
        """The snapshot in ``folder`` plus every committed add of its journal."""
        folder = Path(folder).resolve()
        index = GalleryIndex.load(folder)
        cam_regex = cam_regex or index.info.get("cam_regex") or DEFAULT_CAM_REGEX
        base_size = len(index)
        # a compacted snapshot ends with added images, whose cameras its manifest keeps
        gallery_rows = int(index.info.get("gallery_rows", base_size))
        added_cameras = list(index.info.get("added_cameras", []))
        if not 0 <= gallery_rows <= base_size or len(added_cameras) != base_size - gallery_rows:
            raise GalleryIndexError(
                f"{folder}: the manifest's gallery_rows ({gallery_rows}) and added_cameras "
                f"({len(added_cameras)}) do not fit its {base_size} images"
            )
        cameras = gallery_cameras(index.names[:gallery_rows], cam_regex) + added_cameras
        journal = Journal(folder, index.dim)
        if writable:
            journal.open_writer()
        records = journal.replay()
        if not writable:
            journal = None
        seen = set(index.names)
        names: list[str] = []
        rows: list[np.ndarray] = []
        for record in records:
            keep = [i for i, name in enumerate(record.names) if name not in seen]
            seen.update(record.names)
            names += [record.names[i] for i in keep]
            cameras += [record.cameras[i] for i in keep]
            rows.append(record.features[keep])
        if names:
            start = time.perf_counter()
            index.add(np.concatenate(rows), names)
            log.info(
                "%s: %d images added since the snapshot, replayed in %.1f s ('cacl index "
                "compact' folds them into it)",
                folder,
                len(names),
                time.perf_counter() - start,
            )
        return cls(folder, index, cameras, journal, cam_regex, base_size)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
            self.journal = None

    def __enter__(self) -> LiveIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ facts

    def __len__(self) -> int:
        with self._rw.read():
            return len(self.index)

    @property
    def writable(self) -> bool:
        return self.journal is not None

    def stats(self) -> dict[str, Any]:
        """Size, kind, dimensions, the checkpoint's SHA-256, cameras and their counts."""
        with self._rw.read():
            size = len(self.index)
            counts = Counter(c for c in self._cameras if c is not None)
        return {
            "size": size,
            "kind": self.index.kind,
            "dim": self.index.dim,
            "snapshot_size": self.base_size,
            "added": size - self.gallery_rows,
            "journal_rows": size - self.base_size,
            "checkpoint_sha256": self.index.info.get("checkpoint_sha256"),
            "height": self.index.info.get("height"),
            "width": self.index.info.get("width"),
            "cameras": dict(sorted(counts.items(), key=lambda kv: _camera_key(kv[0]))),
            "writable": self.writable,
        }

    def camera_of(self, name: str) -> str | None:
        with self._rw.read():
            row = self._rows.get(name)
            return None if row is None else self._cameras[row]

    def __contains__(self, name: object) -> bool:
        with self._rw.read():
            return name in self._rows

    def names(self, start: int = 0, count: int = 50, camera: str | None = None) -> list[Hit]:
        """Indexed images, newest first, from position ``start`` (optionally one camera's)."""
        with self._rw.read():
            rows = range(len(self.index) - 1, -1, -1)
            if camera is not None:
                rows = [r for r in rows if self._cameras[r] == camera]
            chosen = list(rows[start : start + count])
            return [Hit(self.index.names[r], 0.0, self._cameras[r]) for r in chosen]

    def file_of(self, name: str) -> Path | None:
        """The file of an indexed image, or ``None`` for any other name."""
        if not _safe_relative(name):
            return None
        with self._rw.read():
            row = self._rows.get(name)
        if row is None:
            return None
        if row >= self.gallery_rows:
            base = self.folder
        else:
            root = self.index.info.get("root")
            if root is None:
                return None
            base = Path(root)
        path = base / name
        return path if path.is_file() else None

    # ------------------------------------------------------------------ search

    def vector_of(self, name: str) -> np.ndarray | None:
        with self._rw.read():
            row = self._rows.get(name)
            return None if row is None else self.index.vector(row)

    def search(
        self,
        vector: np.ndarray,
        top: int = 10,
        *,
        camera: str | None = None,
        exclude_camera: str | None = None,
        exclude_name: str | None = None,
    ) -> list[Hit]:
        """The ``top`` nearest images of ``vector``: only camera ``camera`` when given, none of
        camera ``exclude_camera`` when given, never ``exclude_name``; nearest first."""
        if top < 1:
            raise GalleryIndexError(f"top must be at least 1, got {top}")
        filtered = camera is not None or exclude_camera is not None
        with self._rw.read():
            size = len(self.index)
            k = min(size, top + 1 if not filtered else 2 * top + 8)
            while True:
                distances, indices = self.index.search(vector, k)
                hits = []
                for distance, row in zip(distances[0], indices[0]):
                    if row < 0:
                        continue
                    name, cam = self.index.names[row], self._cameras[row]
                    if name == exclude_name or (camera is not None and cam != camera):
                        continue
                    if exclude_camera is not None and cam == exclude_camera:
                        continue
                    hits.append(Hit(name, float(distance), cam))
                if len(hits) >= top or k >= size:
                    return hits[:top]
                k = min(size, 4 * k)

    def reserve(self, rows: int | None = None) -> bool:
        """Room for ``rows`` more images (default: as many as there are) now, so that the adds
        up to them never stall the searches to copy the index (:meth:`GalleryIndex.reserve`)."""
        with self._rw.write():
            return self.index.reserve(len(self.index) if rows is None else rows)

    # ------------------------------------------------------------------ compaction

    def compact(self) -> int:
        """Fold the journal into the snapshot (:func:`~cacl.inference.snapshot.rewrite_snapshot`)
        and empty it: the folder then opens without replaying adds. Searches go on meanwhile;
        adds wait. Answers how many rows moved from the journal into the snapshot."""
        if self.journal is None:
            raise GalleryIndexError(f"the index {self.folder} is open read-only")
        with self._add_lock:
            moved = len(self.index) - self.base_size
            if moved:
                with self._rw.read():
                    self.index.info["gallery_rows"] = self.gallery_rows
                    self.index.info["added_cameras"] = self._cameras[self.gallery_rows :]
                    rewrite_snapshot(self.index, self.folder)
            if moved or self.journal.has_records:  # (records a crash left after a commit)
                self.journal.reset()
            self.base_size = len(self.index)
        return moved

    # ------------------------------------------------------------------ add

    def camera_for(self, image: NewImage) -> str | None:
        """The request's camera, else the one in the file name (``cam_regex``), else none."""
        if image.camera not in (None, ""):
            return str(image.camera)
        return camera_from_name(image.filename, self.pattern)

    def add_images(self, images: Sequence[NewImage], features: np.ndarray) -> list[Added]:
        """Add ``images`` (their ``features`` row by row) durably; see the module docstring."""
        if self.journal is None:
            raise GalleryIndexError(f"the index {self.folder} is open read-only")
        features = np.ascontiguousarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != len(images):
            raise GalleryIndexError(f"{len(images)} images but features of {features.shape}")
        if features.shape[1] != self.index.dim:
            raise GalleryIndexError(
                f"features have {features.shape[1]} dimensions, the index {self.index.dim}"
            )
        names = [added_name(image) for image in images]
        cameras = [self.camera_for(image) for image in images]
        with self._add_lock:  # one add at a time; searches go on meanwhile
            # the same bytes, whatever their file name, are the image already indexed
            first: dict[str, str] = {}  # digest -> the name it takes in this add
            for name in names:
                first.setdefault(_digest(name), self._by_digest.get(_digest(name), name))
            chosen = [first[_digest(name)] for name in names]
            fresh: dict[str, int] = {}  # new name -> its first image
            for i, name in enumerate(chosen):
                if _digest(name) not in self._by_digest and name not in fresh:
                    fresh[name] = i
            if fresh:
                (self.folder / ADDED).mkdir(exist_ok=True)
                fsync_dir(self.folder)
                for name, i in fresh.items():
                    _write_durably(self.folder / name, images[i].data)
                rows = list(fresh.values())
                record = Record(list(fresh), [cameras[i] for i in rows], features[rows])
                self.journal.append(record)  # the commit point
                with self._rw.write():
                    self.index.add(record.features, record.names)
                    for name in record.names:
                        self._rows[name] = len(self._rows)
                        self._by_digest[_digest(name)] = name
                    self._cameras.extend(record.cameras)
            with self._rw.read():
                out = [
                    Added(name, self._cameras[self._rows[name]], fresh.get(name) == i)
                    for i, name in enumerate(chosen)
                ]
        return out


def _digest(name: str) -> str:
    """The content digest in an added image's name (``added/<stem>-<digest><ext>``)."""
    return PurePosixPath(name).stem.rsplit("-", 1)[-1]


def _camera_key(camera: str) -> tuple[int, int | str]:
    return (0, int(camera)) if camera.isdigit() else (1, camera)
