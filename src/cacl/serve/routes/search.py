"""``GET /api/search`` (by an indexed image or a crop's id), ``POST /api/search`` (an uploaded
crop) and ``GET /api/stats``."""

from __future__ import annotations

import math
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
    st: bool = False
    query_time: float | None = None

    @classmethod
    def parse(cls, values: Mapping[str, Any], max_top: int) -> SearchParams:
        return cls(
            parse_int(values.get("top"), "top", 10, 1, max_top),
            text(values.get("camera")),
            flag(values, "other_cameras"),
            text(values.get("query_camera")),
            flag(values, "st"),
            seconds(text(values.get("query_time"))),
        )


def seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        raise HTTPException(400, f"query_time must be seconds, got {value!r}") from None
    if not math.isfinite(number):
        raise HTTPException(400, f"query_time must be finite, got {value!r}")
    return number


def answer(
    s: ServeState, query: dict, vector: np.ndarray, params: SearchParams, name=None
) -> JSONResponse:
    if params.other_cameras and query["camera"] is None:
        raise HTTPException(400, "other_cameras needs the query's camera (query_camera=C)")
    timing, query_time = s.timing, params.query_time
    if params.st:
        if timing is None:
            raise HTTPException(400, "this server ranks by appearance only: it has no times")
        if query_time is None and name is not None:
            query_time = timing.time_of(name)  # an indexed query's own time
        if query["camera"] is None or query_time is None:
            raise HTTPException(
                400, "st=1 needs the query's camera and time (query_camera=C&query_time=S)"
            )
    if timing is not None and query_time is not None:
        query["time"] = query_time
    hits = s.live.search(
        vector,
        max(params.top, timing.candidates) if params.st else params.top,
        camera=params.camera,
        exclude_camera=query["camera"] if params.other_cameras else None,
        exclude_name=name,
    )
    if params.st:
        ranked = timing.rank(hits, query["camera"], query_time, params.top)
        results = hits_json([h for h, _, _ in ranked], timing)
        for row, (hit, fused, transit) in zip(results, ranked):
            row.update(distance=round(fused, 6), appearance=round(hit.distance, 6),
                       transit=round(transit, 4))  # fmt: skip
    else:
        results = hits_json(hits, timing)
    body = {"query": query, "top": params.top, "size": len(s.live), "st": params.st,
            "results": results}  # fmt: skip
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
        "st": s.timing is not None,
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
