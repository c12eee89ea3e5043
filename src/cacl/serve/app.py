"""The ``cacl serve`` application: :func:`create_app`.

Routes (every error is JSON ``{"detail": message}`` with a 4xx status):

- ``GET /``: the page (``static/index.html``; its assets under ``/static/``);
- ``GET /api/search?name=NAME|query=ID&top=K[&camera=C][&other_cameras=1][&query_camera=C]``:
  the ``top`` nearest indexed images of an indexed image (itself left out) or of an uploaded
  crop's id, only camera ``C`` / none of the query's camera when asked;
- ``POST /api/search``: the same with a crop in the multipart field ``image`` (parameters as
  form fields or in the query string); the crop is kept under an id for a shareable URL;
- ``POST /api/images``: one or more multipart ``image`` fields, optional ``camera``: added to
  the index durably (:meth:`LiveIndex.add_images`), answered with their names;
- ``GET /api/images/NAME``, ``GET /api/thumbs/NAME``, ``GET /api/queries/ID``: the bytes of an
  indexed image, its cached thumbnail, a stored query crop; nothing else is ever served;
- ``GET /api/gallery?start=0&count=48[&camera=C]``: indexed names, newest first;
- ``GET /api/stats``: size, kind, checkpoint SHA-256, cameras, limits;
- ``POST /login``: the page's token form; sets the HttpOnly login cookie;
- ``/api/labels...``: the labelling view (:mod:`cacl.serve.routes.labels`).

Each concern has its router under :mod:`cacl.serve.routes`; they share one
:class:`~cacl.serve.state.ServeState` (``app.state.serve``).

Searches answer ``{"query": {...}, "results": [{"name", "distance", "camera"}, ...], ...}``,
nearest first, with the names of ``names.json`` (added images: ``added/...``).
"""

from __future__ import annotations

import logging
from typing import Any

from anyio import CapacityLimiter
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from cacl.cores import usable_cores
from cacl.errors import CaclError
from cacl.inference.image_bytes import ImageBytesError, ImageTooLargeError
from cacl.inference.index import GalleryIndexError
from cacl.inference.journal import JournalError
from cacl.inference.live import LiveIndex
from cacl.labels.store import LabelStore
from cacl.serve.queries import QueryStore
from cacl.serve.routes import images, labels, pages, search
from cacl.serve.routes.pages import STATIC
from cacl.serve.routes.search import SearchParams
from cacl.serve.security import Guard
from cacl.serve.settings import ServeSettings
from cacl.serve.state import Embed, ServeState
from cacl.serve.thumbs import ThumbnailCache

log = logging.getLogger(__name__)


def create_app(
    live: LiveIndex,
    embed: Embed | None,
    settings: ServeSettings | None = None,
    tracklets: dict[str, str] | None = None,
    timing: Any = None,
) -> FastAPI:
    """The application over ``live``; ``embed`` turns crops into features (``None``: no
    uploads, searches by name only); ``tracklets``: image name -> tracklet, so that a label
    covers a whole tracklet; ``timing``: a :class:`cacl.serve.timing.TimeRanking` (searches
    with ``st=1`` rank by appearance and time)."""
    settings = settings or ServeSettings()
    app = FastAPI(title="cacl serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, settings=settings)
    app.state.live, app.state.settings = live, settings
    app.state.serve = ServeState(
        live=live,
        embed=embed,
        settings=settings,
        thumbs=ThumbnailCache(live.folder, settings.thumb_height, settings.max_pixels),
        queries=QueryStore(live.folder),
        labels=LabelStore(live.folder, known=_Known(live), tracklets=tracklets),
        # searches run on their own few threads, not anyio's default 40 (see ServeSettings)
        search_slots=CapacityLimiter(settings.search_threads or usable_cores()),
        timing=timing,
    )

    @app.exception_handler(CaclError)
    async def user_error(request: Request, exc: CaclError) -> JSONResponse:
        status = 400
        if isinstance(exc, JournalError):  # the disk, not the request
            log.error("cannot store an add: %s", exc)
            status = 500
        elif isinstance(exc, ImageTooLargeError):
            status = 413
        elif isinstance(exc, ImageBytesError):
            status = 415
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:])
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 400)

    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(search.router)
    app.include_router(images.router)
    app.include_router(labels.router)

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(rest: str) -> None:
        raise HTTPException(404, "no such API route")

    return app


class _Known:
    """``name in known``: whether the live index holds the image now (it grows)."""

    def __init__(self, live: LiveIndex) -> None:
        self.live = live

    def __contains__(self, name: object) -> bool:
        return name in self.live


__all__ = ["GalleryIndexError", "SearchParams", "create_app"]
