"""The result encoder: standard 8-bit PNG, chosen by measurement for speed at a fair size.

Pillow spends most of a PNG encode choosing a filter for every row (it tries four); deflate
itself is cheap. This writer filters every row with *Up* (the row minus the one above, one
vectorised subtraction) and deflates with zlib-ng at level 1, streaming the image in strips
of about ``STRIP_BYTES`` so that no full-size temporary is ever made. Each segment (below)
picks its strategy from its first strip: ``Z_RLE`` (run-length matching) when at least
``RUNS_FOR_RLE`` of its filtered bytes repeat the one before (cut-outs and masks: 72-100 %;
there RLE is half the size and faster), ``Z_HUFFMAN_ONLY`` otherwise (photo-like rows:
20-25 %; there matches are rare, so Huffman coding alone is as small, 0.5 % smaller, for
~1.5x less CPU). Measured on the sweep's images (``python -m bench.png_encoders``): against
Pillow's level 1 + ``Z_RLE`` (the encoder before), 4-5.4x less CPU at 2-12 MP (3-4x at
0.3 MP) for +1.5 % on cut-outs (12 MP cut-out: 201 ms / 6.10 MB against 1087 ms / 6.01 MB);
on a 12 MP result with ``strength`` (u2netp's soft mask) RLE took 612 ms of CPU and Huffman
alone 412 ms for 18.98 MB. isal at level 1 would be ~1.4x faster again at +7 %, fpng ~2.5x
at +20-45 %.

A big image is deflated in independent *segments* of about ``SEGMENT_BYTES`` of rows (as
pigz does: each segment a raw deflate stream ended by a sync flush, the last one by the final
block; one zlib header, the Adler-32 of the whole combined from the segments'), so that its
segments can be compressed on several threads (``threads``; zlib-ng releases the GIL). With
matches at distance 1 only, or none, a segment boundary costs a few bytes. A result with
``strength`` is a whole photo with alpha, 3-4x slower to deflate than a cut-out: on two cores
a job alone in the pool encodes it in about half the time.

What comes out is a plain PNG that any decoder reads back to the same pixels. The bytes are
a pure function of the pixels, the mode, the ICC profile and ``transparency`` (the only
``info`` keys Pillow's PNG writer takes from an image) and the zlib-ng build, whatever the
number of threads: ``playground-rt run`` and the server share this function, so they write
the same bytes. Modes other than L, LA, RGB and RGBA (no op makes them) go through Pillow at
level 1 + ``Z_RLE``.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import numpy.typing as npt
from PIL import Image
from zlib_ng import zlib_ng

from playground_rt.pipeline import bands

__all__ = ["SEGMENT_BYTES", "STRIP_BYTES", "adler32_combine", "encode", "encode_pieces"]

STRIP_BYTES = 1 << 20
"""Raw bytes filtered and compressed per step: bounds the encoder's temporaries."""
SEGMENT_BYTES = 1 << 22
"""Raw bytes per independently deflated segment (see the module docstring)."""
RUNS_FOR_RLE = 0.5
"""The share of filtered bytes equal to the one before above which a segment is deflated
with ``Z_RLE``; below it, with ``Z_HUFFMAN_ONLY`` (see the module docstring)."""

SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG colour types by Pillow mode: (colour type, bytes per pixel).
_LAYOUT = {"L": (0, 1), "LA": (4, 2), "RGB": (2, 3), "RGBA": (6, 4)}
_UP = 2  # PNG filter type 2: each byte minus the byte above it
_ZLIB_HEADER = b"\x78\x01"  # deflate, 32 KiB window, "fastest" (level 1), as zlib-ng writes
_ADLER_BASE = 65521


def encode(image: Image.Image, threads: int = 1) -> bytes:
    """``image`` as PNG bytes (see the module docstring for the format and its guarantees),
    its segments deflated on up to ``threads`` threads."""
    return b"".join(encode_pieces(image, threads))


def encode_pieces(image: Image.Image, threads: int = 1) -> list[bytes]:
    """:func:`encode`'s bytes in the pieces they were made in, to be written one after the
    other (a whole file is never joined in memory: 19 MB less for a 12 MP photo)."""
    layout = _LAYOUT.get(image.mode)
    if layout is None:
        return [_pillow(image)]
    colour_type, channels = layout
    width, height = image.size
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    idat = _zlib_stream(image, width * channels, threads)
    crc = zlib_ng.crc32(b"IDAT")
    for piece in idat:
        crc = zlib_ng.crc32(piece, crc)
    size = struct.pack(">I", sum(map(len, idat)))
    return [
        SIGNATURE,
        _chunk(b"IHDR", header),
        *_ancillary(image),
        size + b"IDAT",
        *idat,
        struct.pack(">I", crc),
        _chunk(b"IEND", b""),
    ]


def _ancillary(image: Image.Image) -> list[bytes]:
    """The chunks Pillow's writer would add from ``image.info``, byte for byte as it does."""
    chunks = []
    if icc := image.info.get("icc_profile"):
        chunks.append(_chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc)))
    transparency = image.info.get("transparency")
    if image.mode == "L" and isinstance(transparency, int):
        chunks.append(_chunk(b"tRNS", struct.pack(">H", max(0, min(65535, transparency)))))
    elif image.mode == "RGB" and isinstance(transparency, tuple | list) and len(transparency) == 3:
        chunks.append(_chunk(b"tRNS", struct.pack(">HHH", *transparency)))
    return chunks


def _zlib_stream(image: Image.Image, row_bytes: int, threads: int) -> list[bytes]:
    """The zlib stream of the Up-filtered scanlines, in pieces: the header, one raw deflate
    stream per segment (made on up to ``threads`` threads), the Adler-32."""
    per_segment = max(1, SEGMENT_BYTES // (row_bytes + 1))
    tops = range(0, image.height, per_segment)
    segments = [(top, min(image.height, top + per_segment)) for top in tops]

    def deflated(index: int) -> tuple[bytes, int, int]:
        top, bottom = segments[index]
        return _segment(image, top, bottom, row_bytes, final=index == len(segments) - 1)

    parts = bands.on_threads(deflated, range(len(segments)), threads)
    checksum = 1
    for _, adler, length in parts:
        checksum = adler32_combine(checksum, adler, length)
    return [_ZLIB_HEADER, *(data for data, _, _ in parts), struct.pack(">I", checksum)]


def _segment(
    image: Image.Image, top: int, bottom: int, row_bytes: int, final: bool
) -> tuple[bytes, int, int]:
    """Rows ``top:bottom`` filtered and deflated strip by strip as one raw deflate stream
    (sync-flushed unless ``final``): ``(bytes, Adler-32 of the filtered rows, their length)``."""
    step = max(1, STRIP_BYTES // max(1, row_bytes))
    # the row above the segment's first: the image's, or zeros above the first row
    above = _rows(image, top - 1, top, row_bytes)[0] if top else np.zeros(row_bytes, np.uint8)
    deflate = None
    out: list[bytes] = []
    adler, length = 1, 0
    for start in range(top, bottom, step):
        rows = _rows(image, start, min(bottom, start + step), row_bytes)
        filtered = _up_filtered(rows, above)
        if deflate is None:  # the segment's first strip decides how it is deflated
            deflate = zlib_ng.compressobj(1, zlib_ng.DEFLATED, -15, 8, strategy(filtered))
        adler, length = zlib_ng.adler32(filtered, adler), length + filtered.size
        out.append(deflate.compress(filtered))
        above = rows[-1]
    assert deflate is not None
    out.append(deflate.flush(zlib_ng.Z_FINISH if final else zlib_ng.Z_SYNC_FLUSH))
    return b"".join(out), adler, length


def strategy(filtered: npt.NDArray[np.uint8]) -> int:
    """``Z_RLE`` for filtered rows with long runs (cut-outs, masks), ``Z_HUFFMAN_ONLY`` for
    the rest (see the module docstring)."""
    data = filtered.reshape(-1)
    repeats = np.count_nonzero(data[1:] == data[:-1])
    return zlib_ng.Z_RLE if repeats >= RUNS_FOR_RLE * len(data) else zlib_ng.Z_HUFFMAN_ONLY


def adler32_combine(first: int, second: int, second_length: int) -> int:
    """zlib's ``adler32_combine``: the Adler-32 of two byte strings one after the other,
    from theirs and the second one's length."""
    rem = second_length % _ADLER_BASE
    sum1 = (first & 0xFFFF) + (second & 0xFFFF) + _ADLER_BASE - 1
    sum2 = rem * (first & 0xFFFF) + (first >> 16) + (second >> 16) + _ADLER_BASE - rem
    return (sum1 % _ADLER_BASE) | ((sum2 % _ADLER_BASE) << 16)


def _rows(image: Image.Image, top: int, bottom: int, row_bytes: int) -> npt.NDArray[np.uint8]:
    strip = image.crop((0, top, image.width, bottom)) if image.height != bottom - top else image
    return np.frombuffer(strip.tobytes(), dtype=np.uint8).reshape(bottom - top, row_bytes)


def _up_filtered(
    rows: npt.NDArray[np.uint8], above: npt.NDArray[np.uint8]
) -> npt.NDArray[np.uint8]:
    """The scanlines of ``rows``, each its filter byte and the bytes minus the row above's
    (contiguous: zlib reads it in place, no copy to ``bytes``)."""
    filtered = np.empty((rows.shape[0], rows.shape[1] + 1), dtype=np.uint8)
    filtered[:, 0] = _UP
    np.subtract(rows[0], above, out=filtered[0, 1:])
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # uint8: wraps modulo 256, as PNG
    return filtered


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib_ng.crc32(data, zlib_ng.crc32(kind))
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _pillow(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", compress_level=1, compress_type=zlib.Z_RLE)
    return buffer.getvalue()
