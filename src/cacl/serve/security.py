"""Who may ask what: the access rules of ``cacl serve``, as one ASGI middleware.

- :func:`check_bind`: a server listens on a loopback address, or refuses to start without a
  token (of at least :data:`MIN_TOKEN_LENGTH` characters).
- :class:`Guard`, on every HTTP request, in this order:
  1. ``Host`` must be one of ``allowed_hosts`` when that is set (loopback servers without a
     token: a web page elsewhere cannot reach them by DNS rebinding); else 400;
  2. a ``POST`` that a browser says another origin sent (``Sec-Fetch-Site``, else ``Origin``)
     is refused (403): a page elsewhere cannot add images through the user's browser;
  3. with a token, the request carries it as ``Authorization: Bearer TOKEN`` or as the
     ``cacl_token`` cookie that ``POST /login`` sets (HttpOnly, SameSite=Strict), compared
     with :func:`hmac.compare_digest`; else 401 (JSON for ``/api/``, the login form for pages).
     Only ``POST /login`` and the stylesheet (:data:`PUBLIC`) are answered without it.
     Personal tokens (``settings.people``) are accepted too, and name the person
     (``request.state.person``) whose labels the request makes;
  4. a request body longer than ``max_upload_bytes`` is refused (413) from its
     ``Content-Length`` before it is read, or as soon as the bytes received pass the limit.
  Every response gets ``nosniff``, a same-origin content security policy, no framing and no
  referrer to other sites. The token never appears in a log, a URL or a response.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import os
import re
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException

from cacl.errors import CaclError
from cacl.serve.settings import LOOPBACK_HOSTS, ServeSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIN_TOKEN_LENGTH = 16
COOKIE = "cacl_token"
LOGIN_PATH = "/login"
# what a request without the token may ask: the sign-in itself and its stylesheet (no data)
PUBLIC = {("POST", LOGIN_PATH), ("GET", "/static/style.css"), ("HEAD", "/static/style.css")}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),  # names in URLs never leave for other sites
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' blob: data:; script-src 'self'; "
        b"style-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    ),
]


class ServeError(CaclError):
    """The server cannot start as asked."""


#: a person's name in a people file and in the labels
PERSON = re.compile(r"^[\w .@-]{1,64}$")


def read_people(path: str | os.PathLike) -> dict[str, str]:
    """Personal tokens from a text file, one ``NAME TOKEN`` per line (the token is the last
    word; ``#`` starts a comment): ``{token: name}``."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeError(f"cannot read the people file {path}: {exc}") from None
    people: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, _, token = line.rpartition(" ")
        name = name.strip()
        where = f"{path}, line {number}"
        if not name or not PERSON.match(name):
            raise ServeError(
                f"{where}: write NAME TOKEN (a name of up to 64 letters, digits, spaces or . @ - _)"
            )
        if token in people:
            raise ServeError(f"{where}: {name} has the token of {people[token]}")
        if name in people.values():
            raise ServeError(f"{where}: {name} has a token already")
        people[token] = name
    if not people:
        raise ServeError(f"the people file {path} names nobody (one NAME TOKEN per line)")
    return people


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None, people: dict[str, str] | None = None) -> None:
    """Refuse a non-loopback address without a token, and any too-short token."""
    for name in (people or {}).values():
        if not name:
            raise ServeError("every personal token needs a name")
    short = [n for t, n in (people or {}).items() if len(t) < MIN_TOKEN_LENGTH]
    if short:
        raise ServeError(
            f"{short[0]}'s token has fewer than {MIN_TOKEN_LENGTH} characters; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if people:
        token = token or next(iter(people))
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ServeError(
            f"the token must have at least {MIN_TOKEN_LENGTH} characters; make one with: "
            "python -c 'import secrets; print(secrets.token_urlsafe())'"
        )
    if not is_loopback(host) and token is None:
        raise ServeError(
            f"refusing to listen on {host} without a token: anyone who can reach it could "
            "see and add images. Pass --token (or set CACL_SERVE_TOKEN), or keep the default "
            "--host 127.0.0.1"
        )


def login_page(message: str = "") -> bytes:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<title>cacl: sign in</title><link rel=stylesheet href='/static/style.css'></head>"
        "<body class=login><form method=post action='/login'><h1>cacl person search</h1>"
        "<p>This server needs its access token.</p>"
        "<label>Token <input type=password name=token autocomplete=current-password "
        f"autofocus required></label> <button type=submit>Sign in</button>{note}</form>"
        "</body></html>"
    ).encode()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _hostname(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8000
        return host_header[1 : host_header.find("]")] if "]" in host_header else host_header
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def token_matches(given: str | None, token: str) -> bool:
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))


def request_token(scope: Scope) -> str | None:
    """The bearer token or the login cookie of a request, if any."""
    auth = _header(scope, b"authorization")
    if auth is not None:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    raw = _header(scope, b"cookie")
    if raw:
        cookies = SimpleCookie()
        try:
            cookies.load(raw)
        except CookieError:
            return None
        if COOKIE in cookies:
            return cookies[COOKIE].value
    return None


def cross_site(scope: Scope) -> bool:
    """True when a browser says another origin (another site, or another port of this host)
    sent this request: ``Sec-Fetch-Site`` where the browser sends it, else ``Origin``.
    Requests without either (scripts, curl) are not cross-site."""
    fetch_site = _header(scope, b"sec-fetch-site")
    if fetch_site is not None:
        return fetch_site not in ("same-origin", "none")
    origin = _header(scope, b"origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc != (_header(scope, b"host") or "")


async def _respond(
    send: Send, status: int, body: bytes, content_type: bytes, extra: list | None = None
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body})


def _json(message: str) -> bytes:
    return json.dumps({"detail": message}).encode()


class Guard:
    """The ASGI middleware that applies :class:`ServeSettings`' access rules."""

    def __init__(self, app: ASGIApp, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            status, body, content_type, extra = refusal
            await _respond(send_secured, status, body, content_type, extra)
            return
        await self.app(scope, self._limited(scope, receive), send_secured)

    def _refusal(self, scope: Scope) -> tuple[int, bytes, bytes, list] | None:
        settings, path = self.settings, scope["path"]
        json_type = b"application/json"
        if settings.allowed_hosts is not None:
            host = _hostname(_header(scope, b"host") or "")
            if host not in settings.allowed_hosts:
                return 400, _json("unexpected Host header"), json_type, []
        if scope["method"] not in ("GET", "HEAD") and cross_site(scope):
            return 403, _json("cross-site requests are refused"), json_type, []
        if settings.guarded and (scope["method"], path) not in PUBLIC:
            accepted, person = settings.person_of(request_token(scope))
            scope.setdefault("state", {})["person"] = person
            if not accepted:
                challenge = [(b"www-authenticate", b'Bearer realm="cacl"')]
                if path.startswith("/api/"):
                    return 401, _json("a valid token is needed"), json_type, challenge
                return 401, login_page(), b"text/html; charset=utf-8", challenge
        length = _header(scope, b"content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_upload_bytes:
            return 413, _json(self._too_large()), json_type, []
        return None

    def _too_large(self) -> str:
        return f"the request is over the limit of {self.settings.max_upload_bytes:,} bytes"

    def _limited(self, scope: Scope, receive: Receive) -> Receive:
        limit, received = self.settings.max_upload_bytes, 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, self._too_large())
            return message

        return receive_limited
