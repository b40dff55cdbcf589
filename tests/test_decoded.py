"""``pipeline.decoded``: decoded images kept by the hash of their bytes, within a byte bound,
room made before a new image is decoded."""

from __future__ import annotations

import pytest
from PIL import Image

from playground_rt.pipeline.decoded import DecodedImages, nbytes


def rgb(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (10, 20, 30))


def test_pillow_holds_rgb_at_four_bytes_a_pixel_and_grey_at_one() -> None:
    assert nbytes(rgb(10, 10)) == 400 == nbytes(Image.new("RGBA", (10, 10)))
    assert nbytes(Image.new("L", (10, 10))) == 100


def test_least_recently_used_go_first_within_the_bound() -> None:
    kept = DecodedImages(capacity_bytes=3 * 400)
    for name in "abc":
        assert kept.put(name, rgb(10, 10))
    assert kept.get("a") is not None  # a is now the most recently used
    kept.put("d", rgb(10, 10))
    assert kept.get("b") is None and kept.get("a") is not None
    assert kept.nbytes == 3 * 400 and len(kept) == 3


def test_room_is_made_before_a_new_image_is_decoded() -> None:
    kept = DecodedImages(capacity_bytes=1000)
    kept.put("old", rgb(10, 20))  # 800 bytes
    assert kept.reserve(800) == 800  # the next image needs as much: the old one goes first
    assert len(kept) == 0 and kept.nbytes == 0
    kept.put("small", rgb(5, 5))
    assert kept.reserve(2000) == 0  # one that will not be kept evicts nothing
    assert kept.get("small") is not None


def test_an_image_bigger_than_the_bound_is_not_kept_and_zero_keeps_none() -> None:
    assert not DecodedImages(capacity_bytes=100).put("big", rgb(10, 10))
    none = DecodedImages(capacity_bytes=0)
    assert not none.put("x", rgb(1, 1)) and none.get("x") is None
    with pytest.raises(ValueError):
        DecodedImages(capacity_bytes=-1)
