"""``GET /`` (the page), ``/static/...`` (its assets) and ``POST /login`` (the token form)."""

from __future__ import annotations

import asyncio
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cacl.serve.security import COOKIE, login_page
from cacl.serve.state import state, text

STATIC = resources.files("cacl.serve") / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
def page() -> Response:
    return Response((STATIC / "index.html").read_bytes(), media_type="text/html")


@router.post("/login")
async def login(request: Request) -> Response:
    settings = state(request).settings
    if not settings.guarded:
        return RedirectResponse("/", status_code=303)
    form = await request.form(max_files=0, max_fields=2)
    given = text(form.get("token"))
    if not settings.person_of(given)[0]:
        await asyncio.sleep(0.25)  # no quick guessing
        return Response(login_page("That is not the token."), 401, media_type="text/html")
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        COOKIE,
        given,
        max_age=settings.cookie_max_age,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response
