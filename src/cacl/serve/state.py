"""What every route of ``cacl serve`` shares: :class:`ServeState`, and the request helpers.

One state object per application (``app.state.serve``), built by
:func:`cacl.serve.app.create_app`: the live index, the model (``embed``), the settings, the
thumbnail cache, the uploaded query crops, the labels, and the few threads searches run on.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cacl.inference.image_bytes import CONTENT_TYPES
from cacl.inference.live import Hit, LiveIndex
from cacl.labels.store import LabelStore
from cacl.serve.queries import QueryStore
from cacl.serve.settings import ServeSettings
from cacl.serve.thumbs import ThumbnailCache

Embed = Callable[[Sequence[Image.Image]], np.ndarray]


@dataclass
class ServeState:
    live: LiveIndex
    embed: Embed | None
    settings: ServeSettings
    thumbs: ThumbnailCache
    queries: QueryStore
    labels: LabelStore
    search_slots: CapacityLimiter
    #: the times of the indexed images and a transit model (``st=1`` searches), or ``None``
    timing: Any = None

    def need_embed(self) -> Embed:
        if self.embed is None:
            raise HTTPException(503, "this server has no model to embed crops with")
        return self.embed

    async def searching(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` on the search threads (not anyio's default 40; see ServeSettings)."""
        return await to_thread.run_sync(function, *args, limiter=self.search_slots)

    def indexed_file(self, name: str) -> Path:
        path = self.live.file_of(name)
        if path is None:
            raise HTTPException(404, "no indexed image has this name")
        return path


def state(request: Request) -> ServeState:
    return request.app.state.serve


def parse_int(value: Any, name: str, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}, got {number}")
    return number


def text(value: Any) -> str | None:
    return None if value in (None, "") or isinstance(value, UploadFile) else str(value)


def hits_json(hits: list[Hit], timing: Any = None) -> list[dict[str, Any]]:
    out = [{"name": h.name, "distance": round(h.distance, 6), "camera": h.camera} for h in hits]
    if timing is not None:
        for row in out:
            row["time"] = timing.time_of(row["name"])
    return out


def media_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def flag(values: Mapping[str, Any], name: str) -> bool:
    value = str(values.get(name, "0")).lower()
    if value not in ("0", "1", "true", "false", "on", "off", ""):
        raise HTTPException(400, f"{name} must be 0 or 1, got {value!r}")
    return value in ("1", "true", "on")
