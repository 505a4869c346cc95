"""Images in and out of the API: ``data:`` URLs and uploads checked and decoded, PNG as base64.

Decoding checks the declared size against the pixel limit before any pixel is decoded, so a
small file that claims to be huge (a decompression bomb) costs nothing. No URL is ever fetched.
"""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, ImageOps, UnidentifiedImageError

from cheers.errors import ImageError
from cheers.image import load_image
from cheers.serving.errors import APIError

_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,", re.I)


def image_from_data_url(url: str, max_pixels: int, param: str) -> Image.Image:
    """The RGB image in a ``data:image/...;base64,...`` URL; anything else is a clear 400."""
    if re.match(r"https?://", url, re.I):
        raise APIError(
            400,
            f"{param} is an http(s) URL; this server never fetches from the network. Send the "
            "image inline as a data URL: data:image/png;base64,<the file's bytes in base64>",
            param=param,
            code="image_url_not_supported",
        )
    match = _DATA_URL.match(url)
    if match is None:
        raise APIError(
            400,
            f"{param} must be a base64 data URL such as data:image/png;base64,iVBOR…; got "
            f"{url[:40]!r}",
            param=param,
        )
    return image_from_bytes(decode_base64(url[match.end() :], param), max_pixels, param)


def decode_base64(text: str, param: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise APIError(
            400,
            f"{param} is not valid base64 ({exc}); encode the image file's bytes with base64",
            param=param,
        ) from exc


def image_from_bytes(data: bytes, max_pixels: int, param: str) -> Image.Image:
    """Decode an image file's bytes to RGB, refusing empty, unreadable, corrupt or huge ones."""
    if not data:
        raise APIError(400, f"{param} is empty; send the bytes of a PNG or JPEG file", param=param)
    try:
        opened = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as exc:
        raise APIError(
            400,
            f"{param} is not an image PIL can read (or its header is corrupt); send a PNG or JPEG",
            param=param,
        ) from exc
    width, height = opened.size
    if width * height > max_pixels:
        raise APIError(
            400,
            f"{param} is {width}x{height} = {width * height} pixels, over the server's limit of "
            f"{max_pixels}; downscale it first (the model sees it at its own small resolution)",
            param=param,
        )
    try:
        opened.load()
        # As for files (cheers.image.load_image): photos stored sideways are turned upright.
        return load_image(ImageOps.exif_transpose(opened))
    except ImageError as exc:
        raise APIError(400, f"{param}: {exc}", param=param) from exc
    except Exception as exc:  # decoders raise many types on damaged data
        raise APIError(
            400,
            f"{param} could not be decoded ({type(exc).__name__}); it is probably truncated or "
            "corrupt. Re-export it as PNG or JPEG",
            param=param,
        ) from exc


def png_base64(image: Image.Image) -> str:
    """The image as a base64 PNG (``b64_json`` of the images API)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
