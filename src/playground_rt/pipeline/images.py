"""Getting request images into memory safely, decoded as the page's browser decodes them.

Limits are checked on what is cheap first: the base64 text's length, then the byte count,
then the header (:func:`probe`: Pillow reads only the header at ``open``, and a walk over
the file's structure costs no pixel decoding), and only then are pixels decoded
(:func:`decode`). Only the formats in ``FORMATS`` are opened (most Pillow CVEs sit in
formats a playground never needs). ``DecompressionBombWarning`` is an error here.

What the header probe refuses, besides other formats and too many pixels:

* a JPEG with more than ``MAX_JPEG_SCANS`` scans (each scan is a full pass over the
  coefficients, so thousands of tiny empty scans cost minutes of CPU);
* a JPEG or PNG that ends before its end marker (EOI, IEND), which Chromium refuses too;
* a Huffman-coded JPEG with fewer entropy-coded bytes than one bit per 8x8 block (every
  block needs at least one Huffman code for its DC value), and a PNG whose IDAT data is
  too short to inflate to its pixels (deflate's best ratio is 1032:1). libjpeg pads the
  missing data of such a file with grey and only warns.

One decoding rule for the server and the page (``static/js/op-op-worker.js`` decodes with
``createImageBitmap`` in Chromium; ``tests/test_page_decode.py`` checks each case):

* Orientation: the EXIF ``Orientation`` tag (1-8) is applied when it comes from a JPEG's
  EXIF APP1 segment or from a PNG ``eXIf`` chunk placed before the image data. Nothing
  else rotates an image: not WebP EXIF, not XMP ``tiff:Orientation``, not a PNG "Raw
  profile type exif" text chunk, not an ``eXIf`` chunk after IDAT, and an unreadable EXIF
  block means orientation 1. The decoded image carries no metadata, so nothing
  downstream (``rembg.remove`` calls ``exif_transpose``) can rotate it again.
* 16-bit samples keep their high byte (``v >> 8``), as Chromium does for 16-bit PNGs;
  a 16-bit grey PNG's ``tRNS`` value makes the exactly matching pixels transparent.
* Transparency: the result is RGBA when the file has alpha or transparency, else RGB. The
  page's canvas premultiplies alpha (colour under alpha 0 is lost, partial alpha loses
  precision), so the page sends images with any alpha below 255 to the server.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from playground_rt import errors
from playground_rt.paths import confine
from playground_rt.pipeline import png

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")

MAX_JPEG_SCANS = 100
"""Scans allowed in one JPEG. Real files have 1 (baseline) to about 10 (Pillow's and
libjpeg's ``progressive=True``: 10 for colour, 6 for grey; mozjpeg's scan scripts about as
many): 100 is ten times what encoders write. Each scan costs a pass over the coefficients
(about 1 ms per scan at 16 MP), so the limit bounds decoding to a fraction of a second."""

DEFLATE_MAX_RATIO = 1032
"""Deflate's largest expansion: a 258-byte match coded in 2 bits."""

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


@dataclass(frozen=True)
class Probe:
    """What the header says: the format and the size *after* orientation (what ops see)."""

    format: str
    width: int
    height: int
    orientation: int
    """The EXIF orientation :func:`decode` applies (1 = as stored; 5-8 swap the sides)."""

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


class Implausible(ValueError):
    """A refusal found in the file's structure; its text follows the field's name."""


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
    data = b""
    size = path.stat().st_size
    if size <= limits.max_image_bytes:
        with path.open("rb") as handle:  # it may have grown since stat(): read one byte more
            data = handle.read(limits.max_image_bytes + 1)
        size = len(data)
    if size > limits.max_image_bytes:
        raise errors.TooLarge(
            f"image_path {given!r} is {size} bytes; max_image_bytes={limits.max_image_bytes}"
        )
    return Source(data, hashlib.sha256(data).hexdigest())


def probe(data: bytes, limits: Limits, *, field: str = "image") -> Probe:
    """Every check :func:`decode` makes before decoding pixels, without decoding them
    (``PlaygroundError`` on a refusal): cheap enough for every request."""
    return _check(_open(data, field), data, limits, field)


def decode(data: bytes, limits: Limits, *, field: str = "image") -> Image.Image:
    """Decoded pixels as RGB or RGBA, upright (see the module docstring), or a 4xx error.

    Pillow's parsers raise many kinds of exception on hostile bytes, at ``open`` as well as
    at ``load`` (``OSError``, ``ValueError`` from text-chunk bombs, ``struct.error`` ...):
    this is the edge of untrusted input, so any ``Exception`` past the bomb checks is an
    ``InvalidImage``.
    """
    image = _open(data, field)
    probed = _check(image, data, limits, field)
    try:
        image.load()
        pixels = _normal_mode(image)
    except Exception as exc:
        raise errors.InvalidImage(f"{field} could not be decoded: {exc}") from None
    if probed.orientation > 1:
        pixels = pixels.transpose(_TRANSPOSE[probed.orientation])
    elif pixels is image:
        # An image in memory, not the file object: the same pixels under a plain Image
        # (Pillow's own way to wrap a core image; a copy cost 36 MB and ~20 ms at 12 MP).
        pixels = image._new(image.im)
    pixels.info = {}  # no EXIF or XMP left for anyone to apply again
    return pixels


def _open(data: bytes, field: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise errors.TooLarge(f"{field}: more pixels than the decoder allows") from None
    except UnidentifiedImageError:
        allowed = ", ".join(FORMATS)
        raise errors.InvalidImage(
            f"{field} is not an image in an allowed format ({allowed})"
        ) from None
    except Exception as exc:
        raise errors.InvalidImage(f"{field} could not be read: {exc}") from None


def _check(image: Image.Image, data: bytes, limits: Limits, field: str) -> Probe:
    width, height = image.size
    if width * height > limits.max_pixels:
        raise errors.TooLarge(
            f"{field} is {width}x{height} = {width * height} pixels; max_pixels={limits.max_pixels}"
        )
    fmt = _format(image)
    try:
        if fmt == "JPEG":
            _check_jpeg(data)
        elif fmt == "PNG":
            _check_png(data)
    except Implausible as exc:
        raise errors.InvalidImage(f"{field} {exc}") from None
    orientation = _orientation(image)
    if orientation >= 5:
        width, height = height, width
    return Probe(fmt, width, height, orientation)


def _format(image: Image.Image) -> str:
    """The allow-listed format: Pillow calls a JPEG with a multi-picture index "MPO"."""
    assert image.format is not None
    return "JPEG" if image.format == "MPO" else image.format


# --- structure walks (no pixels) -------------------------------------------------------

_ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
"""The marker that ends a scan's entropy-coded data (not a stuffed 0xFF00, not RSTn)."""
_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3})
_FRAMES = _HUFFMAN_FRAMES | {0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = frozenset({0x00, 0x01, *range(0xD0, 0xD9)})
"""Markers without a length (0x00: a stray stuffed byte, skipped as libjpeg does)."""


def _check_jpeg(data: bytes) -> None:
    """Walk the marker segments to EOI: count scans and entropy-coded bytes."""
    pos, scans, coded, blocks = 2, 0, 0, 0
    while True:
        pos = data.find(b"\xff", pos)  # libjpeg skips stray bytes between segments too
        if pos < 0 or pos + 2 > len(data):
            raise Implausible(
                "could not be decoded: the JPEG ends before its EOI marker (truncated)"
            )
        marker = data[pos + 1]
        if marker == 0xD9:
            break
        if marker == 0xFF or marker in _STANDALONE:
            pos += 1 if marker == 0xFF else 2
            continue
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if end > len(data):
            raise Implausible(
                "could not be decoded: the JPEG ends inside a marker segment (truncated)"
            )
        if marker in _HUFFMAN_FRAMES:
            blocks = _jpeg_blocks(data[pos + 4 : end])
        if marker == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise Implausible(
                    f"is a JPEG with more than MAX_JPEG_SCANS={MAX_JPEG_SCANS} scans "
                    "(progressive JPEGs have about 10)"
                )
            found = _ENTROPY_END.search(data, end)
            if found is None:
                raise Implausible("could not be decoded: the JPEG ends inside a scan (truncated)")
            coded += found.start() - end
            end = found.start()
        pos = end
    if coded * 8 < blocks:
        raise Implausible(
            f"could not be decoded: the JPEG's {coded} bytes of coded data cannot hold "
            f"its {blocks} 8x8 blocks (truncated or corrupt)"
        )


def _jpeg_blocks(frame: bytes) -> int:
    """8x8 blocks over all components of a frame header (SOFn without its length)."""
    if len(frame) < 6 or len(frame) < 6 + 3 * frame[5]:
        raise Implausible("could not be decoded: the JPEG frame header is too short")
    height, width = int.from_bytes(frame[1:3], "big"), int.from_bytes(frame[3:5], "big")
    factors = [(b >> 4, b & 15) for b in frame[7 : 6 + 3 * frame[5] : 3]]
    if not factors or min(min(f) for f in factors) < 1:
        raise Implausible("could not be decoded: the JPEG frame header has bad sampling factors")
    h_max, v_max = max(f[0] for f in factors), max(f[1] for f in factors)
    blocks = 0
    for h, v in factors:
        columns = -(-width * h // h_max)
        rows = -(-height * v // v_max)
        blocks += -(-columns // 8) * -(-rows // 8)
    return blocks


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _check_png(data: bytes) -> None:
    """Walk the chunks to IEND and check that the IDAT data can hold the pixels."""
    pos, compressed = 8, 0
    while True:
        if pos + 8 > len(data):
            raise Implausible(
                "could not be decoded: the PNG ends before its IEND chunk (truncated)"
            )
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        pos += 12 + length
        if pos > len(data):
            name = kind.decode("latin-1")
            raise Implausible(f"could not be decoded: the PNG ends inside its {name} chunk")
        if kind == b"IDAT":
            compressed += length
        elif kind == b"IEND":
            break
    if data[12:16] != b"IHDR":
        raise Implausible("could not be decoded: the PNG does not start with its IHDR chunk")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    bits = data[24] * _PNG_CHANNELS.get(data[25], 1)
    if width * height * bits // 8 > DEFLATE_MAX_RATIO * max(compressed, 1):
        raise Implausible(
            f"could not be decoded: the PNG's {compressed} bytes of IDAT data cannot "
            f"inflate to {width}x{height} pixels (truncated or corrupt)"
        )


# --- orientation and modes -------------------------------------------------------------

_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The orientation the module docstring's rule applies, read before pixels are loaded
    (so a PNG's ``eXIf`` after IDAT is not seen, as Chromium does not see it)."""
    raw = image.info.get("exif") if _format(image) in ("JPEG", "PNG") else None
    if not isinstance(raw, bytes):
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
        value = exif.get(0x0112)
    except Exception:  # a broken EXIF block: the browser ignores it, and so do we
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})


def _normal_mode(image: Image.Image) -> Image.Image:
    if image.mode in _SIXTEEN_BIT:
        image = _high_byte(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    target = "RGBA" if has_alpha else "RGB"
    return image if image.mode == target else image.convert(target)


def _high_byte(image: Image.Image) -> Image.Image:
    """16-bit grey as 8-bit L (or LA with the ``tRNS`` value transparent): ``v >> 8``."""
    values = np.asarray(image)
    grey = Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")
    transparent = image.info.get("transparency")
    if not isinstance(transparent, int):
        return grey
    alpha = np.where(values == transparent, 0, 255).astype(np.uint8)
    return Image.merge("LA", (grey, Image.fromarray(alpha, "L")))


def encode_png(image: Image.Image, threads: int = 1) -> bytes:
    """The result bytes. Fixed settings, so the same pixels always give the same file
    (whatever ``threads``: how many threads may deflate its segments)."""
    return png.encode(image, threads)  # chosen by measurement: see playground_rt.pipeline.png


def encode_png_pieces(image: Image.Image, threads: int = 1) -> list[bytes]:
    """:func:`encode_png`'s bytes in pieces, for a writer that streams them to a file."""
    return png.encode_pieces(image, threads)
