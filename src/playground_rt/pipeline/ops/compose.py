"""The rembg op's compositing after the model: the strength blend and the background colour.

The per-pixel work is Pillow's own C loops (``paste`` with a mask, ``putalpha``, ``point``,
``alpha_composite``) over bands of rows, written into the image being finished, so a 12 MP
job allocates a few MB beside its images rather than whole-image float64 temporaries.
numpy only builds lookup tables over the two alphas (65,536 entries) and reads them.

The blend's arithmetic (see ``RembgParams``): the alpha is ``a0 - rint(s * (a0 - a))``
(a0: the input's alpha, a: the cut-out's), looked up from a table computed in float64, so
it is exactly the float64 formula. The colours are the premultiplied blend
``(s a c + (1 - s) a0 c0) / (s a + (1 - s) a0)``, written as ``c0 + w (c - c0)`` with the
weight ``w = s a / (s a + (1 - s) a0)`` looked up as ``M = rint(255 w)`` and applied by
Pillow's paste (``(c0 (255 - M) + c M) / 255``, rounded): within 1 of the float64 formula
(the weight's rounding moves the colour by at most 255 x 0.5 / 255 = 0.5), exact at
strength 0 and 1, and where both alphas are 0 the colour is the cut-out's, as before.
``static/js/rembg-ops.js`` computes the same tables and the same rounding, bit for bit.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image

U8 = npt.NDArray[np.uint8]

BAND_PIXELS = 1 << 18
"""Pixels per band of rows: ~1 MB of RGBA temporaries per band."""


def bands(size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes of whole rows covering an image of ``size``, ``BAND_PIXELS`` or so each."""
    width, height = size
    step = max(1, BAND_PIXELS // max(1, width))
    return [(0, top, width, min(height, top + step)) for top in range(0, height, step)]


@lru_cache(maxsize=8)
def tables(strength: float) -> tuple[U8, U8]:
    """``(alpha, keep)``, each indexed by ``a0 << 8 | a``: the blended alpha, and ``255 - M``
    (the original's share of the colour; see the module docstring)."""
    a0 = np.repeat(np.arange(256, dtype=np.float64), 256)
    a = np.tile(np.arange(256, dtype=np.float64), 256)
    alpha = (a0 - np.rint(strength * (a0 - a))).astype(np.uint8)
    after = strength * a
    total = after + (1.0 - strength) * a0
    share = np.divide(255 * after, total, out=np.full_like(total, 255.0), where=total > 0)
    keep = 255 - np.rint(share).astype(np.uint8)
    alpha.flags.writeable = keep.flags.writeable = False
    return alpha, keep


def blend_cutout(original: Image.Image, cutout: Image.Image, strength: float) -> Image.Image:
    """The cut-out with its removal scaled down to ``strength``: written over ``cutout``
    when it is RGBA (the caller hands over an image it owns), else over an RGBA copy.

    Band by band, the original's colours are pasted over the cut-out's with the weight
    ``255 - M`` (Pillow's paste rounds ``(c M + c0 (255 - M)) / 255``); the blended alphas
    are gathered in one L image (1 byte a pixel) and put in last.
    """
    out = cutout if cutout.mode == "RGBA" else cutout.convert("RGBA")
    alpha_table, keep_table = tables(strength)
    # An input without alpha has a0 = 255 everywhere: one row of the tables, via point.
    opaque = original.mode in ("RGB", "L") and "transparency" not in original.info
    alpha_row, keep_row = alpha_table[255 << 8 :].tolist(), keep_table[255 << 8 :].tolist()
    alpha = Image.new("L", out.size)
    for box in bands(out.size):
        before = original.crop(box)
        a = out.crop(box).getchannel("A")
        if opaque:
            band_alpha, keep = a.point(alpha_row), a.point(keep_row)
        else:
            before = before.convert("RGBA")
            key = np.asarray(before.getchannel("A")).astype(np.uint16) << 8
            key |= np.asarray(a)
            band_alpha = Image.fromarray(alpha_table[key], "L")
            keep = Image.fromarray(keep_table[key], "L")
        out.paste(before, box, keep)
        alpha.paste(band_alpha, box)
    out.putalpha(alpha)
    return out


def blend_mask(mask: Image.Image, strength: float) -> Image.Image:
    """The L mask dialled to ``strength``: ``255 - rint(s * (255 - m))``, exactly."""
    alpha_table, _ = tables(strength)
    return mask.convert("L").point(alpha_table[255 << 8 :].tolist())


def over_colour(image: Image.Image, colour: tuple[int, int, int, int]) -> Image.Image:
    """rembg's ``apply_background_color`` (``Image.alpha_composite`` of ``image`` over a
    solid ``colour``), band by band over ``image`` when it is RGBA (the caller's own),
    else over an RGBA copy: the same per-pixel arithmetic without a full-size backdrop."""
    out = image if image.mode == "RGBA" else image.convert("RGBA")
    for box in bands(out.size):
        band = out.crop(box)
        out.paste(Image.alpha_composite(Image.new("RGBA", band.size, colour), band), box)
    return out
