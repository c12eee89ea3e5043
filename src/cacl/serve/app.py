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
- ``POST /login``: the page's token form; sets the HttpOnly login cookie.

Searches answer ``{"query": {...}, "results": [{"name", "distance", "camera"}, ...], ...}``,
nearest first, with the names of ``names.json`` (added images: ``added/...``).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from anyio import CapacityLimiter, to_thread
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cacl.cores import usable_cores
from cacl.errors import CaclError
from cacl.inference.cameras import camera_from_name
from cacl.inference.image_bytes import (
    CONTENT_TYPES,
    DecodedImage,
    ImageBytesError,
    ImageTooLargeError,
    decode_image,
)
from cacl.inference.index import GalleryIndexError
from cacl.inference.journal import JournalError
from cacl.inference.live import Hit, LiveIndex, NewImage
from cacl.serve.queries import QueryStore
from cacl.serve.security import COOKIE, Guard, login_page, token_matches
from cacl.serve.settings import ServeSettings
from cacl.serve.thumbs import ThumbnailCache

log = logging.getLogger(__name__)

Embed = Callable[[Sequence[Image.Image]], np.ndarray]
STATIC = resources.files("cacl.serve") / "static"


@dataclass
class SearchParams:
    top: int
    camera: str | None
    other_cameras: bool
    query_camera: str | None

    @classmethod
    def parse(cls, values: Mapping[str, Any], max_top: int) -> SearchParams:
        top = _int(values.get("top"), "top", 10, 1, max_top)
        flag = str(values.get("other_cameras", "0")).lower()
        if flag not in ("0", "1", "true", "false", "on", "off", ""):
            raise HTTPException(400, f"other_cameras must be 0 or 1, got {flag!r}")
        return cls(
            top,
            _text(values.get("camera")),
            flag in ("1", "true", "on"),
            _text(values.get("query_camera")),
        )


def _int(value: Any, name: str, default: int, low: int, high: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise HTTPException(400, f"{name} must be between {low} and {high}, got {number}")
    return number


def _text(value: Any) -> str | None:
    return None if value in (None, "") or isinstance(value, UploadFile) else str(value)


def _hits(hits: list[Hit]) -> list[dict[str, Any]]:
    return [{"name": h.name, "distance": round(h.distance, 6), "camera": h.camera} for h in hits]


def _media_type(path: Path) -> str:
    return CONTENT_TYPES.get(path.suffix.lower()) or (
        mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    )


def create_app(
    live: LiveIndex, embed: Embed | None, settings: ServeSettings | None = None
) -> FastAPI:
    """The application over ``live``; ``embed`` turns crops into features (``None``: no
    uploads, searches by name only)."""
    settings = settings or ServeSettings()
    app = FastAPI(title="cacl serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, settings=settings)
    thumbs = ThumbnailCache(live.folder, settings.thumb_height, settings.max_pixels)
    queries = QueryStore(live.folder)
    app.state.live, app.state.settings = live, settings
    # searches run on their own few threads, not anyio's default 40 (see ServeSettings)
    search_slots = CapacityLimiter(settings.search_threads or usable_cores())

    async def searching(function: Callable[..., Any], *args: Any) -> Any:
        return await to_thread.run_sync(function, *args, limiter=search_slots)

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

    def need_embed() -> Embed:
        if embed is None:
            raise HTTPException(503, "this server has no model to embed crops with")
        return embed

    def answer(query: dict, vector: np.ndarray, params: SearchParams, name=None) -> JSONResponse:
        if params.other_cameras and query["camera"] is None:
            raise HTTPException(400, "other_cameras needs the query's camera (query_camera=C)")
        hits = live.search(
            vector,
            params.top,
            camera=params.camera,
            exclude_camera=query["camera"] if params.other_cameras else None,
            exclude_name=name,
        )
        body = {"query": query, "top": params.top, "size": len(live), "results": _hits(hits)}
        return JSONResponse(body)  # plain JSON types: no jsonable_encoder pass (the hot path)

    async def read_images(form: Any, limit: int) -> list[tuple[UploadFile, bytes, DecodedImage]]:
        uploads = [item for item in form.getlist("image") if isinstance(item, UploadFile)]
        if not uploads:
            raise HTTPException(400, "send the image(s) as the multipart field 'image'")
        if len(uploads) > limit:
            raise HTTPException(400, f"at most {limit} images per request, got {len(uploads)}")
        out = []
        for upload in uploads:
            data = await upload.read()
            try:
                decoded = await run_in_threadpool(decode_image, data, settings.max_pixels)
            except ImageBytesError as exc:
                raise type(exc)(f"{upload.filename or 'image'}: {exc}") from exc
            out.append((upload, data, decoded))
        return out

    # ------------------------------------------------------------------ the page

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        if settings.token is None:
            return RedirectResponse("/", status_code=303)
        form = await request.form(max_files=0, max_fields=2)
        if not token_matches(_text(form.get("token")), settings.token):
            await asyncio.sleep(0.25)  # no quick guessing
            return Response(login_page("That is not the token."), 401, media_type="text/html")
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            settings.token,
            max_age=settings.cookie_max_age,
            httponly=True,
            samesite="strict",
            path="/",
        )
        return response

    # ------------------------------------------------------------------ the API

    @app.get("/api/stats")
    def stats() -> dict:
        return {
            **live.stats(),
            "uploads": embed is not None,
            "max_upload_bytes": settings.max_upload_bytes,
            "max_files": settings.max_files,
            "max_top": settings.max_top,
        }

    @app.get("/api/search")
    async def search(request: Request) -> JSONResponse:
        return await searching(find, request.query_params)

    def find(values: Mapping[str, str]) -> JSONResponse:
        params = SearchParams.parse(values, settings.max_top)
        name, query_id = _text(values.get("name")), _text(values.get("query"))
        if (name is None) == (query_id is None):
            raise HTTPException(400, "give name= (an indexed image) or query= (a crop's id)")
        if name is not None:
            vector = live.vector_of(name)
            if vector is None:
                raise HTTPException(404, f"no indexed image is named {name!r}")
            query = {"name": name, "camera": live.camera_of(name)}
            return answer(query, vector, params, name=name)
        vector = queries.features(query_id)
        if vector is None:
            path = queries.path_of(query_id)
            if path is None:
                raise HTTPException(404, f"no query crop has the id {query_id!r}")
            image = decode_image(path.read_bytes(), settings.max_pixels).image
            vector = need_embed()([image])[0]
            queries.remember(query_id, vector)
        return answer({"id": query_id, "camera": params.query_camera}, vector, params)

    @app.post("/api/search")
    async def search_upload(request: Request) -> JSONResponse:
        need_embed()
        form = await request.form(max_files=1, max_fields=8)
        params = SearchParams.parse({**request.query_params, **form}, settings.max_top)
        [(upload, data, decoded)] = await read_images(form, 1)
        query_id = await run_in_threadpool(queries.save, data, decoded.ext)
        vector = queries.features(query_id)
        if vector is None:
            vector = (await run_in_threadpool(need_embed(), [decoded.image]))[0]
            queries.remember(query_id, vector)
        camera = params.query_camera or camera_from_name(upload.filename or "", live.pattern)
        query = {"id": query_id, "camera": camera}
        return await searching(answer, query, vector, params)

    @app.post("/api/images", status_code=201)
    async def add_images(request: Request) -> dict:
        if not live.writable:
            raise HTTPException(403, "this server's index is read-only")
        need_embed()
        form = await request.form(max_files=settings.max_files, max_fields=8)
        camera = _text(form.get("camera")) or _text(request.query_params.get("camera"))
        items = await read_images(form, settings.max_files)
        features = await run_in_threadpool(need_embed(), [d.image for _, _, d in items])
        images = [NewImage(data, u.filename or "image", d.ext, camera) for u, data, d in items]
        done = await run_in_threadpool(live.add_images, images, features)
        log.info("added %d images (%d new)", len(done), sum(a.new for a in done))
        return {
            "added": [{"name": a.name, "camera": a.camera, "new": a.new} for a in done],
            "size": len(live),
        }

    @app.get("/api/gallery")
    def gallery(request: Request) -> dict:
        values = request.query_params
        start = _int(values.get("start"), "start", 0, 0, 1 << 40)
        count = _int(values.get("count"), "count", 48, 1, settings.max_top)
        found = live.names(start, count, _text(values.get("camera")))
        return {"start": start, "size": len(live), "results": _hits(found)}

    def indexed_file(name: str) -> Path:
        path = live.file_of(name)
        if path is None:
            raise HTTPException(404, "no indexed image has this name")
        return path

    @app.get("/api/images/{name:path}")
    def image(name: str) -> FileResponse:
        path = indexed_file(name)
        headers = {"Cache-Control": "private, max-age=3600"}
        return FileResponse(path, media_type=_media_type(path), headers=headers)

    @app.get("/api/thumbs/{name:path}")
    def thumbnail(name: str) -> Response:
        data = thumbs.get(name, indexed_file(name))
        headers = {"Cache-Control": "private, max-age=3600"}
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.get("/api/queries/{query_id}")
    def query_crop(query_id: str) -> FileResponse:
        path = queries.path_of(query_id)
        if path is None:
            raise HTTPException(404, "no query crop has this id")
        return FileResponse(path, media_type=_media_type(path))

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def unknown(rest: str) -> None:
        raise HTTPException(404, "no such API route")

    return app


__all__ = ["GalleryIndexError", "SearchParams", "create_app"]
