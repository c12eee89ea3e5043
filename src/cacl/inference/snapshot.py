"""Rewriting an index folder's snapshot in place: :func:`rewrite_snapshot`.

A live index folder holds more than its snapshot: the journal of adds, the added images, query
crops, thumbnails and the writer lock (:mod:`cacl.inference.live`). Folding the journal into
the snapshot (``cacl index compact``) therefore cannot replace the folder the way
:meth:`GalleryIndex.save` does. Instead, for the next *generation* ``g``:

1. the names and vectors are written as ``names.g<g>.json`` and ``index.g<g>.faiss`` (or
   ``features.g<g>.npy``), each ``fsync``ed;
2. ``manifest.json``, which names its generation's files, is replaced atomically (temporary
   file, ``fsync``, rename, ``fsync`` of the folder): this is the commit point;
3. the files of earlier generations are deleted.

A crash before step 2 leaves the old snapshot whole (the new generation's files are orphans,
deleted by the next rewrite); a crash after it, the new one. The caller resets the journal only
after step 2, and replaying a journal skips the names a snapshot already holds, so every
acknowledged image is in the index exactly once whichever way a crash falls.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from cacl.inference.index import MANIFEST, GalleryIndex, data_files
from cacl.inference.journal import fsync_dir

_DATA_FILE = re.compile(r"^(names|features|index)(\.g\d+)?\.(json|npy|faiss)$")


def generation(folder: Path) -> int:
    """The generation of the snapshot in ``folder`` (0: as ``cacl index build`` wrote it)."""
    manifest = json.loads((folder / MANIFEST).read_text())
    return int(manifest.get("generation", 0))


def rewrite_snapshot(index: GalleryIndex, folder: str | os.PathLike) -> int:
    """Make ``index`` (all its rows) the snapshot of ``folder``; answer its generation."""
    folder = Path(folder)
    new = generation(folder) + 1
    files = index.write_data(folder, new)
    manifest = {**index.manifest(files), "generation": new}
    tmp = folder / f".{MANIFEST}.tmp"
    with open(tmp, "w") as handle:
        handle.write(json.dumps(manifest, indent=2) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MANIFEST)  # the commit point
    fsync_dir(folder)
    keep = set(files.values())
    for path in folder.iterdir():
        if _DATA_FILE.match(path.name) and path.name not in keep:
            path.unlink(missing_ok=True)
    return new


__all__ = ["data_files", "generation", "rewrite_snapshot"]
