"""``GET /api/search`` (by an indexed image or a crop's id), ``POST /api/search`` (an uploaded
crop) and ``GET /api/stats``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cacl.inference.cameras import camera_from_name
from cacl.inference.image_bytes import decode_image
from cacl.serve.images_io import read_images
from cacl.serve.state import ServeState, flag, hits_json, parse_int, state, text

router = APIRouter()


@dataclass
class SearchParams:
    top: int
    camera: str | None
    other_cameras: bool
    query_camera: str | None

    @classmethod
    def parse(cls, values: Mapping[str, Any], max_top: int) -> SearchParams:
        return cls(
            parse_int(values.get("top"), "top", 10, 1, max_top),
            text(values.get("camera")),
            flag(values, "other_cameras"),
            text(values.get("query_camera")),
        )


def answer(
    s: ServeState, query: dict, vector: np.ndarray, params: SearchParams, name=None
) -> JSONResponse:
    if params.other_cameras and query["camera"] is None:
        raise HTTPException(400, "other_cameras needs the query's camera (query_camera=C)")
    hits = s.live.search(
        vector,
        params.top,
        camera=params.camera,
        exclude_camera=query["camera"] if params.other_cameras else None,
        exclude_name=name,
    )
    body = {"query": query, "top": params.top, "size": len(s.live), "results": hits_json(hits)}
    return JSONResponse(body)  # plain JSON types: no jsonable_encoder pass (the hot path)


def find(s: ServeState, values: Mapping[str, str]) -> JSONResponse:
    params = SearchParams.parse(values, s.settings.max_top)
    name, query_id = text(values.get("name")), text(values.get("query"))
    if (name is None) == (query_id is None):
        raise HTTPException(400, "give name= (an indexed image) or query= (a crop's id)")
    if name is not None:
        vector = s.live.vector_of(name)
        if vector is None:
            raise HTTPException(404, f"no indexed image is named {name!r}")
        query = {"name": name, "camera": s.live.camera_of(name)}
        return answer(s, query, vector, params, name=name)
    vector = s.queries.features(query_id)
    if vector is None:
        path = s.queries.path_of(query_id)
        if path is None:
            raise HTTPException(404, f"no query crop has the id {query_id!r}")
        image = decode_image(path.read_bytes(), s.settings.max_pixels).image
        vector = s.need_embed()([image])[0]
        s.queries.remember(query_id, vector)
    return answer(s, {"id": query_id, "camera": params.query_camera}, vector, params)


@router.get("/api/stats")
def stats(request: Request) -> dict:
    s = state(request)
    return {
        **s.live.stats(),
        "uploads": s.embed is not None,
        "max_upload_bytes": s.settings.max_upload_bytes,
        "max_files": s.settings.max_files,
        "max_top": s.settings.max_top,
    }


@router.get("/api/search")
async def search(request: Request) -> JSONResponse:
    s = state(request)
    return await s.searching(find, s, request.query_params)


@router.post("/api/search")
async def search_upload(request: Request) -> JSONResponse:
    s = state(request)
    s.need_embed()
    form = await request.form(max_files=1, max_fields=8)
    params = SearchParams.parse({**request.query_params, **form}, s.settings.max_top)
    [(upload, data, decoded)] = await read_images(s, form, 1)
    query_id = await run_in_threadpool(s.queries.save, data, decoded.ext)
    vector = s.queries.features(query_id)
    if vector is None:
        vector = (await run_in_threadpool(s.need_embed(), [decoded.image]))[0]
        s.queries.remember(query_id, vector)
    camera = params.query_camera or camera_from_name(upload.filename or "", s.live.pattern)
    return await s.searching(answer, s, {"id": query_id, "camera": camera}, vector, params)
