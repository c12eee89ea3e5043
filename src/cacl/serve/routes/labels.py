"""The labelling view's API, over :class:`~cacl.labels.store.LabelStore` (``labels.log`` beside
the index: every acknowledged click survives a kill -9):

- ``GET /api/labels``: identities (number, images, cameras), pairs kept apart, events per person;
- ``GET /api/labels/image?name=NAME``: the identity an indexed image belongs to, if any;
- ``POST /api/labels`` (JSON ``{"op": "same"|"different", "a": NAME, "b": NAME,
  "merge": false, "by": WHO}``): 201 with the event; 409 ``{"detail", "identities": [i, j],
  "merge": true}`` when ``same`` would join two identities (send again with ``merge: true``) or
  contradicts a "different";
- ``POST /api/labels/undo`` (JSON ``{"by": WHO}`` or ``{"event": ID}``): cancels that person's
  latest label, or one event;
- ``GET /api/labels/suggest?count=N``: unlabelled images whose nearest neighbours in other
  cameras are the least decided (the smallest gap between the first and second distance): the
  queries a click tells most about.
"""

from __future__ import annotations

import json
import random
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from cacl.labels.store import LabelConflict, LabelError
from cacl.serve.security import PERSON
from cacl.serve.state import ServeState, parse_int, state

router = APIRouter()
_WHO = PERSON
SUGGEST_CANDIDATES = 256  # unlabelled images scored per suggestion request


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise HTTPException(400, "send a JSON object") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "send a JSON object")
    return body


def _who(request: Request, body: dict[str, Any]) -> str | None:
    """Who marks: the person of a personal token (a request cannot speak for another), else
    the name the page sends."""
    person = getattr(request.state, "person", None)
    who = body.get("by")
    if who in (None, ""):
        return person
    if not isinstance(who, str) or not _WHO.match(who):
        raise HTTPException(400, "by: up to 64 letters, digits, spaces or . @ - _")
    if person is not None and who != person:
        raise HTTPException(403, f"this token is {person}'s: it cannot mark for {who}")
    return who


def _name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise HTTPException(400, f"{key}: the name of an indexed image is needed")
    return value


def identities_json(s: ServeState) -> dict[str, Any]:
    labels = s.labels.labels()
    return {
        "identities": [
            {
                "number": i.number,
                "images": i.images,
                "cameras": sorted({c for c in map(s.live.camera_of, i.images) if c is not None}),
            }
            for i in labels.identities
        ],
        "apart": sorted(labels.apart),
        "by": labels.by,
        "events": len(labels.events),
    }


@router.get("/api/labels")
def all_labels(request: Request) -> dict:
    return {**identities_json(state(request)), "you": getattr(request.state, "person", None)}


@router.get("/api/labels/image")
def image_label(request: Request) -> dict:
    s = state(request)
    name = request.query_params.get("name")
    if not name or name not in s.live:
        raise HTTPException(404, "no indexed image has this name")
    labels = s.labels.labels()
    number = labels.identity(name)
    images = labels.identities[number - 1].images if number else []
    return {"name": name, "identity": number, "images": images}


@router.post("/api/labels", status_code=201)
async def mark(request: Request) -> Any:
    s, body = state(request), await _body(request)
    a, b, op = _name(body, "a"), _name(body, "b"), body.get("op")
    merge = body.get("merge", False)
    if not isinstance(merge, bool):
        raise HTTPException(400, "merge: true or false")
    try:
        event = s.labels.mark(op, a, b, who=_who(request, body), merge=merge)
    except LabelConflict as exc:
        detail = {"detail": str(exc), "identities": list(exc.identities)}
        detail["merge"] = "merge" in str(exc)
        return JSONResponse(detail, status_code=409)
    except LabelError as exc:
        raise HTTPException(404 if "not an image" in str(exc) else 400, str(exc)) from None
    labels = s.labels.labels()
    return {"event": event, "identity": labels.identity(a)}


@router.post("/api/labels/undo")
async def undo(request: Request) -> dict:
    s, body = state(request), await _body(request)
    target = body.get("event")
    if target is not None and not isinstance(target, str):
        raise HTTPException(400, "event: an event id")
    try:
        event = s.labels.undo(who=_who(request, body), event_id=target)
    except LabelError as exc:
        raise HTTPException(404, str(exc)) from None
    return {"event": event}


@router.get("/api/labels/suggest")
async def suggest(request: Request) -> dict:
    s = state(request)
    count = parse_int(request.query_params.get("count"), "count", 8, 1, 64)
    return await s.searching(suggestions, s, count)


def suggestions(s: ServeState, count: int, seed: int | None = None) -> dict:
    labels = s.labels.labels()
    names = [h.name for h in s.live.names(0, len(s.live))]
    unlabelled = [n for n in names if labels.identity(n) is None and s.live.camera_of(n)]
    rng = random.Random(seed)
    candidates = rng.sample(unlabelled, min(len(unlabelled), SUGGEST_CANDIDATES))
    scored = []
    for name in candidates:
        vector = s.live.vector_of(name)
        hits = s.live.search(vector, 2, exclude_camera=s.live.camera_of(name), exclude_name=name)
        if len(hits) == 2:
            scored.append((hits[1].distance - hits[0].distance, name))
    scored.sort()
    return {"suggestions": [{"name": n, "gap": round(g, 6)} for g, n in scored[:count]]}
