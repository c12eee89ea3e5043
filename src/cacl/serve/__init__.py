"""``cacl serve``: person search in the browser over a live index folder.

One process serves a web page (:mod:`cacl.serve.static`, all assets inside the package) and the
JSON API the page uses (:func:`cacl.serve.app.create_app`). The server is thin: the search, the
durable adds and the storage live in :class:`cacl.inference.live.LiveIndex`; uploads are checked
by :func:`cacl.inference.image_bytes.decode_image`; who may ask anything is decided by
:mod:`cacl.serve.security`. Needs the ``serve`` extra: ``pip install 'cacl[serve]'``.
"""

from cacl.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
