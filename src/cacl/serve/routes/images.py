"""``POST /api/images`` (add), ``GET /api/gallery`` (list), and the bytes of what is indexed:
``/api/images/NAME``, ``/api/thumbs/NAME``, ``/api/queries/ID``; nothing else is ever served."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cacl.inference.live import NewImage
from cacl.serve.images_io import read_images
from cacl.serve.state import hits_json, media_type, parse_int, state, text

log = logging.getLogger("cacl.serve.app")
router = APIRouter()
CACHE = {"Cache-Control": "private, max-age=3600"}


@router.post("/api/images", status_code=201)
async def add_images(request: Request) -> dict:
    s = state(request)
    if not s.live.writable:
        raise HTTPException(403, "this server's index is read-only")
    s.need_embed()
    form = await request.form(max_files=s.settings.max_files, max_fields=8)
    camera = text(form.get("camera")) or text(request.query_params.get("camera"))
    items = await read_images(s, form, s.settings.max_files)
    features = await run_in_threadpool(s.need_embed(), [d.image for _, _, d in items])
    images = [NewImage(data, u.filename or "image", d.ext, camera) for u, data, d in items]
    done = await run_in_threadpool(s.live.add_images, images, features)
    log.info("added %d images (%d new)", len(done), sum(a.new for a in done))
    return {
        "added": [{"name": a.name, "camera": a.camera, "new": a.new} for a in done],
        "size": len(s.live),
    }


@router.get("/api/gallery")
def gallery(request: Request) -> dict:
    s, values = state(request), request.query_params
    start = parse_int(values.get("start"), "start", 0, 0, 1 << 40)
    count = parse_int(values.get("count"), "count", 48, 1, s.settings.max_top)
    found = s.live.names(start, count, text(values.get("camera")))
    return {"start": start, "size": len(s.live), "results": hits_json(found, s.timing)}


@router.get("/api/images/{name:path}")
def image(name: str, request: Request) -> FileResponse:
    path = state(request).indexed_file(name)
    return FileResponse(path, media_type=media_type(path), headers=CACHE)


@router.get("/api/thumbs/{name:path}")
def thumbnail(name: str, request: Request) -> Response:
    s = state(request)
    data = s.thumbs.get(name, s.indexed_file(name))
    return Response(data, media_type="image/jpeg", headers=CACHE)


@router.get("/api/queries/{query_id}")
def query_crop(query_id: str, request: Request) -> FileResponse:
    path = state(request).queries.path_of(query_id)
    if path is None:
        raise HTTPException(404, "no query crop has this id")
    return FileResponse(path, media_type=media_type(path))
