"""Tone ops: per-band histogram stretch, equalisation and grayscale.

Tone ops work on the colour bands only; an alpha band passes through untouched (a
transparent pixel's colour must not steer the histogram's remap of its alpha). The two
band helpers here are shared with the other op families.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from PIL import Image, ImageOps

from playground_rt.pipeline.ops.base import OpContext, OpSpec

_COLOUR_MODE = {"RGB": "RGB", "RGBA": "RGB", "L": "L", "LA": "L"}


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """``(colour, alpha)`` of an RGB, RGBA, L or LA image; ``alpha`` is None without one."""
    assert image.mode in _COLOUR_MODE, f"ops take RGB, RGBA, L or LA, got {image.mode}"
    if image.mode in ("RGB", "L"):
        return image, None
    return image.convert(_COLOUR_MODE[image.mode]), image.getchannel("A")


def join_alpha(colour: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """Inverse of :func:`split_alpha`: the colour bands with ``alpha`` put back."""
    if alpha is None:
        return colour
    joined = colour.convert("RGBA" if colour.mode == "RGB" else "LA")
    joined.putalpha(alpha)
    return joined


class AutocontrastParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Stretch each colour band so its darkest value becomes 0 and its lightest 255.

    ``cutoff`` percent of the pixels are ignored at each end of every band's histogram
    first, so a few outliers do not pin the range. Alpha is left untouched.
    """

    cutoff: Annotated[
        float,
        msgspec.Meta(
            ge=0, le=49.0, description="Percent of pixels cut from each end of the histogram."
        ),
    ] = 0.0


def autocontrast(image: Image.Image, params: AutocontrastParams, ctx: OpContext) -> Image.Image:
    colour, alpha = split_alpha(image)
    return join_alpha(ImageOps.autocontrast(colour, cutoff=params.cutoff), alpha)


class EqualizeParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Equalise each colour band's histogram (uniform distribution of values).

    Alpha is left untouched.
    """


def equalize(image: Image.Image, params: EqualizeParams, ctx: OpContext) -> Image.Image:
    colour, alpha = split_alpha(image)
    return join_alpha(ImageOps.equalize(colour), alpha)


class GrayscaleParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Convert to 8-bit luminance, L = (19595 R + 38470 G + 7471 B + 32768) >> 16.

    With ``keep_alpha`` an image with alpha becomes luminance + alpha (LA); without it
    the alpha band is dropped and the result is opaque.
    """

    keep_alpha: Annotated[
        bool, msgspec.Meta(description="Keep the alpha band of an image that has one.")
    ] = True


def grayscale(image: Image.Image, params: GrayscaleParams, ctx: OpContext) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA")
    return image.convert("LA" if has_alpha and params.keep_alpha else "L")


SPECS: tuple[OpSpec[Any], ...] = (
    OpSpec(
        "autocontrast",
        AutocontrastParams,
        autocontrast,
        client=True,
        summary="Stretch each colour band's histogram to the full 0..255 range.",
    ),
    OpSpec(
        "equalize",
        EqualizeParams,
        equalize,
        client=False,
        summary="Equalise each colour band's histogram.",
    ),
    OpSpec(
        "grayscale",
        GrayscaleParams,
        grayscale,
        client=True,
        summary="Convert to luminance, optionally keeping alpha.",
    ),
)
