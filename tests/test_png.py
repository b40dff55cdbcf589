"""The result encoder: standard PNG that decodes to the same pixels, the same bytes every time."""

from __future__ import annotations

import io
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image, ImageCms

from playground_rt.pipeline import images, png


def pixels(width: int, height: int, mode: str, seed: int = 5) -> Image.Image:
    """Noise over a gradient, with fully transparent and opaque runs in the alpha modes."""
    rng = np.random.default_rng(seed)
    bands = len(mode)
    ramp = np.linspace(0, 255, width * height * bands).reshape(height, width, bands)
    noisy = np.clip(ramp + rng.integers(-20, 21, size=ramp.shape), 0, 255).astype(np.uint8)
    if mode.endswith("A"):
        noisy[: height // 3, :, -1] = 0
        noisy[-height // 3 :, :, -1] = 255
    return Image.fromarray(noisy[..., 0] if bands == 1 else noisy, mode)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data), formats=["PNG"])
    image.load()
    return image


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA"])
@pytest.mark.parametrize(
    "size",
    [
        pytest.param((1, 1), id="1x1"),
        pytest.param((7, 3), id="odd"),
        pytest.param((640, 480), id="vga"),
        pytest.param((1500, 900), id="many-strips"),
    ],
)
def test_decodes_to_the_same_pixels(mode: str, size: tuple[int, int]) -> None:
    image = pixels(*size, mode)
    back = decoded(png.encode(image))
    assert back.mode == mode
    assert back.size == size
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_more_rows_than_a_strip_holds() -> None:
    image = pixels(png.STRIP_BYTES // 3 + 1, 5, "RGB")  # one row per strip, the last one short
    assert np.array_equal(np.asarray(decoded(png.encode(image))), np.asarray(image))


def test_bytes_are_stable_across_calls_and_threads() -> None:
    image = pixels(900, 700, "RGBA")
    first = png.encode(image)
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda _: png.encode(image), range(8)))
    assert again == [first] * 8
    assert images.encode_png(image) == first  # the server's and the CLI's encoder is this one


def chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    """``(kind, body)`` of every chunk, each one's CRC checked."""
    assert data.startswith(png.SIGNATURE)
    offset, found = len(png.SIGNATURE), []
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 4], "big")
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        crc = int.from_bytes(data[offset + 8 + length : offset + 12 + length], "big")
        assert zlib.crc32(kind + body) == crc, kind
        found.append((kind, body))
        offset += 12 + length
    return found


def test_chunks_are_well_formed() -> None:
    data = png.encode(pixels(33, 17, "RGBA"))
    assert [kind for kind, _ in chunks(data)] == [b"IHDR", b"IDAT", b"IEND"]


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_segments_on_threads_make_one_valid_stream_and_the_same_bytes(
    threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big image is deflated in independent segments, on threads or not: the same bytes,
    one zlib stream whose Adler-32 (checked by ``zlib.decompress``) covers them all."""
    monkeypatch.setattr(png, "SEGMENT_BYTES", 20_000)
    monkeypatch.setattr(png, "STRIP_BYTES", 7_000)  # several strips per segment, ragged
    image = pixels(301, 211, "RGBA")  # 1205 bytes a row: 17 rows a segment, 13 segments
    data = png.encode(image, threads=threads)
    assert data == png.encode(image)
    (idat,) = [body for kind, body in chunks(data) if kind == b"IDAT"]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(211, 1205)
    assert (raw[:, 0] == 2).all()  # every row Up-filtered
    assert np.array_equal(np.asarray(decoded(data)), np.asarray(image))


def test_adler32_combine_is_zlibs() -> None:
    rng = np.random.default_rng(1)
    for first_length, second_length in [(0, 0), (1, 0), (0, 5), (70_000, 65_521), (3, 200_000)]:
        first = rng.integers(0, 256, first_length, np.uint8).tobytes()
        second = rng.integers(0, 256, second_length, np.uint8).tobytes()
        combined = png.adler32_combine(zlib.adler32(first), zlib.adler32(second), len(second))
        assert combined == zlib.adler32(first + second)


def test_keeps_the_icc_profile_and_transparency_as_pillow_does() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    image = pixels(20, 10, "RGB")
    image.info["icc_profile"] = icc
    image.info["transparency"] = (1, 2, 3)
    back = decoded(png.encode(image))
    assert back.info["icc_profile"] == icc
    assert back.info["transparency"] == (1, 2, 3)
    grey = pixels(20, 10, "L")
    grey.info["transparency"] = 7
    assert decoded(png.encode(grey)).info["transparency"] == 7


@pytest.mark.parametrize("mode", ["1", "P", "I;16"])
def test_other_modes_go_through_pillow(mode: str) -> None:
    image = pixels(30, 20, "L").convert(mode)
    back = decoded(png.encode(image))
    assert np.array_equal(np.asarray(back), np.asarray(image))


def test_smaller_than_raw_on_a_cutout() -> None:
    cutout = pixels(400, 300, "RGBA")
    array = np.asarray(cutout).copy()
    array[array[..., 3] == 0] = 0  # rembg's cut-outs are transparent black outside the subject
    data = png.encode(Image.fromarray(array, "RGBA"))
    assert len(data) < array.nbytes * 0.8


def test_each_segment_is_deflated_the_way_its_rows_compress_best(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run-length matching where the filtered rows repeat (a cut-out's transparent black),
    Huffman coding alone where they do not (photo-like rows: as small, ~1.5x less CPU);
    each segment decides for itself and the stream stays one valid PNG."""
    monkeypatch.setattr(png, "SEGMENT_BYTES", 40_000)
    noisy = np.asarray(pixels(200, 100, "RGBA")).copy()
    noisy[50:] = 0  # the bottom half: one long run
    chosen: list[int] = []
    strategy = png.strategy

    def recorded(rows: np.ndarray) -> int:
        chosen.append(strategy(rows))
        return chosen[-1]

    monkeypatch.setattr(png, "strategy", recorded)
    data = png.encode(Image.fromarray(noisy, "RGBA"))
    assert chosen[0] == zlib.Z_HUFFMAN_ONLY and chosen[-1] == zlib.Z_RLE
    assert np.array_equal(np.asarray(decoded(data)), noisy)


def test_pieces_are_the_file_in_order() -> None:
    image = pixels(120, 90, "RGBA")
    pieces = png.encode_pieces(image)
    assert len(pieces) > 3 and b"".join(pieces) == png.encode(image)
