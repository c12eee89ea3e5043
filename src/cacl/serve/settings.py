"""What a ``cacl serve`` process allows: :class:`ServeSettings`."""

from __future__ import annotations

from dataclasses import dataclass

from cacl.inference.image_bytes import DEFAULT_MAX_PIXELS

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeSettings:
    """Limits and the access rule of a server.

    ``token``: when set, every request must carry it (``Authorization: Bearer TOKEN`` or the
    cookie set by the login form). ``allowed_hosts``: the ``Host`` header values accepted
    (without port), ``None`` for any: a server on loopback without a token accepts only
    loopback names, so a web page elsewhere cannot reach it through DNS rebinding.
    ``people``: personal tokens, each naming who marks labels with it.
    """

    @property
    def guarded(self) -> bool:
        """Whether a request needs a token."""
        return self.token is not None or bool(self.people)

    def person_of(self, given: str | None) -> tuple[bool, str | None]:
        """``(accepted, person)`` for the token a request carries (``person``: None for the
        shared token)."""
        from cacl.serve.security import token_matches

        if not self.guarded:
            return True, None
        accepted, person = False, None
        if self.token is not None and token_matches(given, self.token):
            accepted = True
        for token, name in (self.people or {}).items():  # compare with every one: no timing hint
            if token_matches(given, token):
                accepted, person = True, name
        return accepted, person

    token: str | None = None
    # token -> the person it belongs to (``--people FILE``): any of them lets a request in, and
    # the labels that request makes are that person's, whatever name the page sends
    people: dict[str, str] | None = None
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS
    max_upload_bytes: int = 8 << 20  # a whole request body
    max_pixels: int = DEFAULT_MAX_PIXELS  # one image
    max_files: int = 64  # images per add request
    max_top: int = 500  # results per search
    thumb_height: int = 160  # pixels; thumbnails are never larger than the image
    cookie_max_age: int = 7 * 24 * 3600  # seconds the login cookie lasts
    # searches answered at once (0: one per usable CPU core); more wait their turn in order
    search_threads: int = 0
