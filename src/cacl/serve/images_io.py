"""Reading uploaded images out of a multipart form, with the server's limits."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from cacl.inference.image_bytes import DecodedImage, ImageBytesError, decode_image
from cacl.serve.state import ServeState


async def read_images(
    s: ServeState, form: Any, limit: int
) -> list[tuple[UploadFile, bytes, DecodedImage]]:
    """The decoded ``image`` fields of ``form`` (1 to ``limit``); a bad one names its file."""
    uploads = [item for item in form.getlist("image") if isinstance(item, UploadFile)]
    if not uploads:
        raise HTTPException(400, "send the image(s) as the multipart field 'image'")
    if len(uploads) > limit:
        raise HTTPException(400, f"at most {limit} images per request, got {len(uploads)}")
    out = []
    for upload in uploads:
        data = await upload.read()
        try:
            decoded = await run_in_threadpool(decode_image, data, s.settings.max_pixels)
        except ImageBytesError as exc:
            raise type(exc)(f"{upload.filename or 'image'}: {exc}") from exc
        out.append((upload, data, decoded))
    return out
