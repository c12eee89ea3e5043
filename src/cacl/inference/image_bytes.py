"""Checking and decoding the bytes of an image file before it is indexed or searched.

:func:`decode_image` accepts JPEG, PNG, WebP and BMP only (Pillow is told which decoders it may
try, so no other format's parser ever sees untrusted bytes), refuses images of more than
``max_pixels`` pixels from their header, before any pixel is decoded (Pillow's
decompression-bomb warning and error become :class:`ImageTooLargeError` as well), and decodes
every pixel, so a truncated file is refused rather than indexed.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from cacl.errors import CaclError

FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "BMP": ".bmp"}
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
}
DEFAULT_MAX_PIXELS = 40_000_000  # a 4K frame is 8.3 MP; a pedestrian crop far less


class ImageBytesError(CaclError, ValueError):
    """The bytes are not an image that may be indexed or searched."""


class ImageTooLargeError(ImageBytesError):
    """The image has more pixels than allowed (or is a decompression bomb)."""


@dataclass
class DecodedImage:
    """An RGB image decoded from checked bytes, with the extension of its format."""

    image: Image.Image
    ext: str
    width: int
    height: int


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Decode ``data`` as RGB, or raise :class:`ImageBytesError` with the reason."""
    if not data:
        raise ImageBytesError("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=list(FORMATS)) as img:
                width, height = img.size
                if width < 1 or height < 1:
                    raise ImageBytesError(f"zero-sized image ({width} x {height})")
                if width * height > max_pixels:
                    raise ImageTooLargeError(
                        f"image of {width} x {height} pixels is over the limit of "
                        f"{max_pixels:,} pixels"
                    )
                ext = FORMATS[img.format]
                rgb = img.convert("RGB")  # decodes every pixel
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"image refused as a decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageBytesError(
            f"not a readable image (accepted: {', '.join(sorted(FORMATS))})"
        ) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        if isinstance(exc, ImageBytesError):
            raise
        raise ImageBytesError(f"cannot decode the image: {exc}") from exc
    return DecodedImage(rgb, ext, width, height)
