"""Getting request images into memory safely.

Limits are checked on what is cheap first: the base64 text's length, then the byte count,
then the pixel count from the header (Pillow reads only the header at ``open``), and only
then are pixels decoded. Only the formats in ``FORMATS`` are opened (most Pillow CVEs sit in
formats a playground never needs). ``DecompressionBombWarning`` is an error here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from . import errors
from .paths import confine

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

warnings.simplefilter("error", Image.DecompressionBombWarning)


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class Source:
    """The image bytes of a request and their sha256 (the cache key's image part)."""

    data: bytes
    sha256: str


def from_base64(text: str, limits: Limits) -> Source:
    if len(text) > (limits.max_image_bytes + 2) // 3 * 4 + 4:
        raise errors.TooLarge(
            f"image_base64 decodes to more than max_image_bytes={limits.max_image_bytes}"
        )
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise errors.BadRequest("image_base64 is not valid base64") from None
    if not data:
        raise errors.InvalidImage("image_base64 is empty")
    return Source(data, hashlib.sha256(data).hexdigest())


def from_path(root: Path, given: str, limits: Limits) -> Source:
    path = confine(root, given, field="image_path")
    if not os.path.isfile(path):  # unlike Path.is_file (3.11): False on ENAMETOOLONG
        raise errors.NotFound(f"image_path {given!r} does not exist under the data root")
    size = path.stat().st_size
    if size > limits.max_image_bytes:
        raise errors.TooLarge(
            f"image_path {given!r} is {size} bytes; max_image_bytes={limits.max_image_bytes}"
        )
    data = path.read_bytes()
    return Source(data, hashlib.sha256(data).hexdigest())


def decode(data: bytes, limits: Limits, *, field: str = "image") -> Image.Image:
    """Decoded pixels as RGB or RGBA (EXIF orientation applied), or a 4xx error.

    Pillow's parsers raise many kinds of exception on hostile bytes, at ``open`` as well as
    at ``load`` (``OSError``, ``ValueError`` from text-chunk bombs, ``struct.error`` and
    ``AttributeError`` from EXIF, ...): this is the edge of untrusted input, so any
    ``Exception`` past the bomb checks is an ``InvalidImage``.
    """
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.TooLarge(f"{field}: more pixels than the decoder allows") from None
    except UnidentifiedImageError:
        allowed = ", ".join(FORMATS)
        raise errors.InvalidImage(
            f"{field} is not an image in an allowed format ({allowed})"
        ) from None
    except Exception as exc:
        raise errors.InvalidImage(f"{field} could not be read: {exc}") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise errors.TooLarge(
            f"{field} is {width}x{height} = {width * height} pixels; max_pixels={limits.max_pixels}"
        )
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except Exception as exc:
        raise errors.InvalidImage(f"{field} could not be decoded: {exc}") from None
    return _normal_mode(upright)


def _normal_mode(image: Image.Image) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    target = "RGBA" if has_alpha else "RGB"
    return image if image.mode == target else image.convert(target)


def encode_png(image: Image.Image) -> bytes:
    """The result bytes. Fixed settings, so the same pixels always give the same file."""
    buffer = io.BytesIO()
    # Run-length zlib at level 1: ~20 % faster than plain level 1 and smaller on cut-outs
    # (large transparent runs); encoding is the biggest cost of a job after inference.
    image.save(buffer, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()
