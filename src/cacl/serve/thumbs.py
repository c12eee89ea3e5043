"""Thumbnails of indexed images, made once and cached in the index folder.

A thumbnail is a JPEG at most ``height`` pixels high (never larger than the image), stored as
``thumbs/<sha1 of the name>.jpg`` inside the index folder: the cache path never contains a
name, so no name can lead outside ``thumbs/``. Written under a unique temporary name and renamed,
so two requests for the same new thumbnail both get a whole file. When the folder cannot be
written the thumbnail is made on every request instead.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tempfile
from pathlib import Path

from PIL import Image

from cacl.inference.image_bytes import ImageBytesError, decode_image

log = logging.getLogger(__name__)

THUMBS = "thumbs"


class ThumbnailCache:
    """``get(name, path)`` gives the thumbnail bytes of the indexed image at ``path``."""

    def __init__(self, folder: Path, height: int, max_pixels: int) -> None:
        self.folder, self.height, self.max_pixels = folder / THUMBS, height, max_pixels

    def path_for(self, name: str) -> Path:
        return self.folder / f"{hashlib.sha1(name.encode('utf-8')).hexdigest()}.jpg"

    def get(self, name: str, source: Path) -> bytes:
        cached = self.path_for(name)
        try:
            return cached.read_bytes()
        except FileNotFoundError:
            pass
        data = self._make(source)
        try:
            self.folder.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".thumb-", suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o644)
            os.replace(tmp, cached)
        except OSError as exc:
            log.warning("cannot cache the thumbnail of %s: %s", name, exc)
        return data

    def _make(self, source: Path) -> bytes:
        decoded = decode_image(source.read_bytes(), self.max_pixels)
        image = decoded.image
        if image.height > self.height:
            width = max(1, round(image.width * self.height / image.height))
            image = image.resize((width, self.height), Image.Resampling.BICUBIC)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=85)
        return out.getvalue()


__all__ = ["ImageBytesError", "ThumbnailCache"]
