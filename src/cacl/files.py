"""File helpers: the modes of what cacl writes atomically, and file digests.

``tempfile.mkstemp`` / ``mkdtemp`` create owner-only files (0600) and folders (0700) whatever the
umask; a checkpoint, an ONNX file or an index renamed from them would keep those modes. These
helpers give them the modes a plain ``open`` / ``mkdir`` would (0666 / 0777 minus the umask).
"""

from __future__ import annotations

import hashlib
import os


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def chmod_like_new_file(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a newly created file gets (``0o666 & ~umask``)."""
    os.chmod(path, 0o666 & ~_umask())


def chmod_like_new_dir(path: str | os.PathLike) -> None:
    """Give ``path`` the mode a newly created folder gets (``0o777 & ~umask``)."""
    os.chmod(path, 0o777 & ~_umask())


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of the file ``path`` (hex), read in 1 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
