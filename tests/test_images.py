"""``images.probe`` and ``images.decode`` alone: what they refuse, and how they decode.

The orientation and 16-bit cases follow what Chromium's ``createImageBitmap`` does;
``test_page_decode.py`` checks the page and the server against each other in Chromium.
"""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from playground_rt import errors
from playground_rt.pipeline import images

from .conftest import encode, sample_image

LIMITS = images.Limits(max_image_bytes=20 << 20, max_pixels=16_800_000)
XMP_6 = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/></rdf:RDF></x:xmpmeta>'
)


def saved(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def exif(orientation: int) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = orientation
    return tags.tobytes()


# --- crafted files ----------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png16(values: np.ndarray[Any, Any], colour_type: int, *extra: bytes) -> bytes:
    """A 16-bit PNG of ``values`` (H x W or H x W x C, 0..65535), ``extra`` chunks before IDAT."""
    height, width = values.shape[:2]
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in values)
    ihdr = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + png_chunk(b"IDAT", zlib.compress(rows))
        + png_chunk(b"IEND", b"")
    )


def jpeg_markers(data: bytes) -> list[tuple[int, int]]:
    """``(marker, offset)`` of each segment up to EOI (entropy data skipped)."""
    pos, found = 2, []
    while True:
        marker = data[pos + 1]
        found.append((marker, pos))
        if marker == 0xD9:
            return found
        end = pos + 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:
            end = next(i for i in range(end, len(data) - 1) if data[i] == 0xFF and data[i + 1] != 0)
        pos = end


def scan_bomb(width: int, height: int, extra_scans: int) -> bytes:
    """A progressive grey JPEG followed by ``extra_scans`` empty AC scans of its Y component
    (FINDINGS D1): each is 30-odd bytes and a full pass over the coefficients to decode."""
    data = saved(Image.new("RGB", (width, height), (128,) * 3), "JPEG", progressive=True)
    eoi = jpeg_markers(data)[-1][1]
    # One AC table with two end-of-band-run codes: '0' = EOBRUN 2**14 + 14 bits, '10' =
    # EOBRUN 2**3 + 3 bits; each scan marks every block of Y as empty with a few of them.
    dht = b"\xff\xc4" + struct.pack(">H", 21) + b"\x13" + bytes([1, 1] + [0] * 14) + b"\xe0\x30"
    left, bits = -(-width // 8) * -(-height // 8), ""
    while left >= 16384:
        run = min(left, 32767)
        bits, left = bits + "0" + format(run - 16384, "014b"), left - run
    if left:
        assert 8 <= left < 16, "pick a size whose Y block count these two codes can write"
        bits += "10" + format(left - 8, "03b")
    bits += "1" * (-len(bits) % 8)
    coded = int(bits, 2).to_bytes(len(bits) // 8, "big").replace(b"\xff", b"\xff\x00")
    scan = b"\xff\xda" + struct.pack(">H", 8) + bytes([1, 1, 0x03, 1, 63, 0]) + coded
    return data[:eoi] + dht + scan * extra_scans + b"\xff\xd9"


def jpeg_claiming(width: int, height: int) -> bytes:
    """A 96x72 baseline JPEG whose SOF0 says ``width`` x ``height`` (FINDINGS D17)."""
    data = bytearray(saved(Image.new("RGB", (96, 72)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def count_scans(data: bytes) -> int:
    return sum(marker == 0xDA for marker, _ in jpeg_markers(data))


def refused(data: bytes, limits: images.Limits = LIMITS) -> errors.PlaygroundError:
    """The error ``probe`` raises, after checking ``decode`` raises the same."""
    with pytest.raises(errors.PlaygroundError) as probed:
        images.probe(data, limits)
    with pytest.raises(type(probed.value)) as decoded:
        images.decode(data, limits)
    assert decoded.value.detail == probed.value.detail
    return probed.value


# --- D1: JPEG scans ---------------------------------------------------------------------


def test_real_progressive_jpegs_have_about_ten_scans() -> None:
    photo = sample_image(640, 480)
    assert count_scans(saved(photo, "JPEG", progressive=True)) == 10
    assert count_scans(saved(photo.convert("L"), "JPEG", progressive=True)) == 6
    assert count_scans(saved(photo, "JPEG", progressive=True, optimize=True, quality=30)) == 10
    assert count_scans(saved(photo, "JPEG")) == 1
    assert images.MAX_JPEG_SCANS >= 60  # generous headroom over what encoders write


def test_a_scan_bomb_is_refused_before_decoding() -> None:
    bomb = scan_bomb(4096, 4096, 20_000)  # FINDINGS D1: 20 s+ of decoding before the fix
    assert len(bomb) > 600_000
    error = refused(bomb)
    assert isinstance(error, errors.InvalidImage)
    assert f"MAX_JPEG_SCANS={images.MAX_JPEG_SCANS}" in error.detail


def test_the_scan_limit_is_exact() -> None:
    allowed = images.MAX_JPEG_SCANS - 10  # the progressive base has 10 scans of its own
    at_limit = scan_bomb(1024, 1024, allowed)
    assert count_scans(at_limit) == images.MAX_JPEG_SCANS
    assert images.decode(at_limit, LIMITS).size == (1024, 1024)
    assert "MAX_JPEG_SCANS" in refused(scan_bomb(1024, 1024, allowed + 1)).detail


# --- D17 / D16: truncated and implausible files -------------------------------------------


def test_a_jpeg_claiming_more_pixels_than_its_data_holds_is_refused() -> None:
    error = refused(jpeg_claiming(4096, 4096))
    assert isinstance(error, errors.InvalidImage)
    assert "cannot hold" in error.detail


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"quality": 10}, id="q10"),
        pytest.param({"quality": 10, "optimize": True, "progressive": True}, id="q10-progressive"),
    ],
)
def test_real_12mp_high_compression_jpegs_are_accepted(options: dict[str, Any]) -> None:
    photo = saved(sample_image(4000, 3000, seed=11), "JPEG", **options)
    assert images.probe(photo, LIMITS).size == (4000, 3000)
    # One colour, the least data a Huffman JPEG can have: at least 2 bits (a DC code and
    # an end-of-block code) for each of its 4:2:0 blocks, twice the 1 bit probe requires.
    flat = saved(Image.new("RGB", (4000, 3000), (90, 120, 200)), "JPEG", **options)
    blocks = 500 * 375 + 2 * 250 * 188
    assert len(flat) * 8 >= 2 * blocks
    assert images.probe(flat, LIMITS).size == (4000, 3000)


PNG = encode(sample_image())
JPEG = saved(sample_image(), "JPEG")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(PNG[:-12], id="png-without-iend"),
        pytest.param(PNG[: len(PNG) // 2], id="png-cut-in-idat"),
        pytest.param(JPEG[:-2], id="jpeg-without-eoi"),
        pytest.param(JPEG[: len(JPEG) * 2 // 3], id="jpeg-cut-in-scan"),
        pytest.param(saved(sample_image(), "JPEG", progressive=True)[:-2], id="progressive-cut"),
    ],
)
def test_truncated_files_are_refused_by_the_probe(data: bytes) -> None:
    error = refused(data)
    assert isinstance(error, errors.InvalidImage)
    assert "could not be decoded" in error.detail


def test_a_png_whose_idat_cannot_inflate_to_its_size_is_refused() -> None:
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 4000, 4000, 8, 2, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
    lie = b"\x89PNG\r\n\x1a\n" + ihdr + idat + png_chunk(b"IEND", b"")
    assert "cannot inflate" in refused(lie).detail
    # The most compressible real PNG of that size is well inside the bound.
    flat = encode(Image.new("RGB", (4000, 4000), (7, 7, 7)))
    assert images.probe(flat, LIMITS).size == (4000, 4000)


def test_probe_checks_the_header_limits() -> None:
    assert "allowed format" in refused(b"%PDF-1.4\n%%EOF\n").detail
    small = images.Limits(max_image_bytes=1 << 20, max_pixels=96 * 72 - 1)
    assert isinstance(refused(PNG, small), errors.TooLarge)


# --- D9: orientation ----------------------------------------------------------------------

BASE = sample_image(96, 72)


def xmp_png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP_6)
    return saved(BASE, "PNG", pnginfo=info)


def raw_profile_png() -> bytes:
    """Orientation 6 in a "Raw profile type exif" text chunk, as ImageMagick writes it."""
    payload = b"Exif\x00\x00" + exif(6)
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(payload):8d}\n{payload.hex()}")
    return saved(BASE, "PNG", pnginfo=info)


def exif_after_idat_png() -> bytes:
    data = saved(BASE, "PNG", exif=exif(6))
    chunks, pos = [], 8
    while pos < len(data):
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        chunks.append(data[pos:end])
        pos = end
    exif_chunk = next(c for c in chunks if c[4:8] == b"eXIf")
    rest = [c for c in chunks if c[4:8] != b"eXIf"]
    return data[:8] + b"".join(rest[:-1]) + exif_chunk + rest[-1]


ROTATED = [
    pytest.param(saved(BASE, "JPEG", exif=exif(6), quality=95), id="jpeg-exif"),
    pytest.param(saved(BASE, "PNG", exif=exif(6)), id="png-exif-before-idat"),
]
NOT_ROTATED = [
    pytest.param(saved(BASE, "WEBP", exif=exif(6), lossless=True), id="webp-exif"),
    pytest.param(xmp_png(), id="png-xmp"),
    pytest.param(saved(BASE, "JPEG", xmp=XMP_6.encode(), quality=95), id="jpeg-xmp"),
    pytest.param(saved(BASE, "WEBP", xmp=XMP_6.encode(), lossless=True), id="webp-xmp"),
    pytest.param(raw_profile_png(), id="png-raw-profile"),
    pytest.param(exif_after_idat_png(), id="png-exif-after-idat"),
]


@pytest.mark.parametrize("data", ROTATED)
def test_exif_orientation_of_jpeg_and_png_is_applied(data: bytes) -> None:
    probed = images.probe(data, LIMITS)
    decoded = images.decode(data, LIMITS)
    assert probed.orientation == 6
    assert probed.size == decoded.size == (72, 96)
    with Image.open(io.BytesIO(data)) as stored:
        expected = stored.convert("RGB").transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(decoded), np.asarray(expected))


@pytest.mark.parametrize("data", NOT_ROTATED)
def test_other_orientation_sources_are_ignored_as_chromium_does(data: bytes) -> None:
    probed = images.probe(data, LIMITS)
    decoded = images.decode(data, LIMITS)
    assert probed.orientation == 1
    assert probed.size == decoded.size == (96, 72)


@pytest.mark.parametrize("data", ROTATED + NOT_ROTATED)
def test_a_decoded_image_carries_no_orientation_left(data: bytes) -> None:
    """rembg.remove calls exif_transpose on what it gets: it must not rotate again."""
    decoded = images.decode(data, LIMITS)
    assert ImageOps.exif_transpose(decoded).size == decoded.size


def test_an_unreadable_exif_block_does_not_stop_the_orientation() -> None:
    # EXIF whose Make tag has a float type: Pillow's exif_transpose raised on it (422).
    ifd = struct.pack("<H", 2)
    ifd += struct.pack("<HHI", 0x010F, 11, 1) + b"\x21\x00\x00\x00"
    ifd += struct.pack("<HHI", 0x0112, 3, 1) + struct.pack("<HH", 6, 0)
    block = b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00"
    data = saved(sample_image(24, 16), "JPEG", exif=block)
    assert images.decode(data, LIMITS).size == (16, 24)


# --- D8: 16-bit samples --------------------------------------------------------------------

RNG = np.random.default_rng(8)
GREY16 = RNG.integers(0, 65536, size=(72, 96))


def test_16_bit_grey_keeps_the_high_byte() -> None:
    gradient = np.linspace(0, 65535, 96 * 72).reshape(72, 96).astype(np.uint16)
    for values in (gradient, GREY16):
        data = encode(Image.fromarray(values.astype(np.uint16)))
        with Image.open(io.BytesIO(data)) as stored:
            assert stored.mode == "I;16"
        decoded = np.asarray(images.decode(data, LIMITS))
        assert decoded.shape == (72, 96, 3)
        assert np.array_equal(decoded[..., 0], values >> 8)
        assert np.array_equal(decoded[..., 0], decoded[..., 2])


def test_16_bit_grey_with_trns_is_transparent_where_it_matches() -> None:
    key = int(GREY16[5, 7])
    data = png16(GREY16, 0, png_chunk(b"tRNS", struct.pack(">H", key)))
    decoded = np.asarray(images.decode(data, LIMITS))
    assert decoded.shape == (72, 96, 4)
    assert np.array_equal(decoded[..., 3] == 0, GREY16 == key)
    assert np.array_equal(decoded[..., 0], GREY16 >> 8)


@pytest.mark.parametrize(("colour_type", "channels"), [(2, 3), (4, 2), (6, 4)])
def test_other_16_bit_pngs_keep_the_high_byte(colour_type: int, channels: int) -> None:
    values = RNG.integers(0, 65536, size=(9, 11, channels))
    decoded = np.asarray(images.decode(png16(values, colour_type), LIMITS))
    high = values >> 8
    if channels == 2:  # grey + alpha
        high = np.dstack([high[..., 0]] * 3 + [high[..., 1]])
    assert np.array_equal(decoded, high)


# --- D23: reading a file under the data root ---------------------------------------------


def test_from_path_reads_at_most_max_image_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that grows after its size was checked (another process writing it)."""
    path = tmp_path / "grow.png"
    path.write_bytes(b"x" * 1000)
    limits = images.Limits(max_image_bytes=4096, max_pixels=1 << 20)
    real_open = Path.open
    grew = threading.Event()

    def grow_then_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.name == "grow.png" and not grew.is_set():  # the writer wins the race
            grew.set()
            with open(self, "ab") as handle:
                handle.write(b"y" * 1_000_000)
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", grow_then_open)
    with pytest.raises(errors.TooLarge, match="is 4097 bytes; max_image_bytes=4096"):
        images.from_path(tmp_path, "grow.png", limits)
    assert grew.is_set()
    monkeypatch.undo()
    path.write_bytes(b"x" * 4096)
    assert len(images.from_path(tmp_path, "grow.png", limits).data) == 4096
