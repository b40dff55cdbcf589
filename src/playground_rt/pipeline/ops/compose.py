"""The rembg op's compositing after the model: the cut-out, the strength blend, the colour.

The per-pixel work is Pillow's own C loops (``paste`` with a mask, ``putalpha``, ``point``,
``alpha_composite``) over bands of rows (``pipeline.bands``: on every core the job may use),
written into the image being finished, so a 12 MP job allocates a few MB beside its images
rather than whole-image float64 temporaries. numpy only builds lookup tables over the two
alphas (65,536 entries) and reads them.

The cut-out is rembg's ``naive_cutout``, ``Image.composite(image, transparent black, mask)``:
colour ``c0 m / 255`` (rounded as Pillow's paste does), alpha ``m``. The blend's arithmetic
(see ``RembgParams``): the alpha is ``a0 - rint(s * (a0 - a))`` (a0: the input's alpha, a:
the cut-out's), looked up from a table computed in float64, so it is exactly the float64
formula. The colours are the premultiplied blend ``(s a c + (1 - s) a0 c0) / (s a + (1 - s)
a0)``, written as ``c0 + w (c - c0)`` with the weight ``w = s a / (s a + (1 - s) a0)`` looked
up as ``M = rint(255 w)`` and applied by Pillow's paste (``(c0 (255 - M) + c M) / 255``,
rounded): within 1 of the float64 formula (the weight's rounding moves the colour by at most
255 x 0.5 / 255 = 0.5), exact at strength 0 and 1, and where both alphas are 0 the colour is
the cut-out's, as before. ``static/js/rembg-ops.js`` computes the same tables and the same
rounding, bit for bit.

For an opaque original (RGB or L: ``a0`` = 255 everywhere) :func:`cutout` makes the cut-out
and the blend in one pass over each band (the same two pastes, on the band while it is in
cache), instead of a whole cut-out first and a second pass over it: the same bytes, 1.2x
faster on one thread (``python -m bench.compose``: 12 MP 233 -> 194 ms, 114 on two).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image
from rembg.bg import naive_cutout

from playground_rt.pipeline import bands
from playground_rt.pipeline.bands import Box

U8 = npt.NDArray[np.uint8]


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


@lru_cache(maxsize=8)
def opaque_rows(strength: float) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """:func:`tables`' rows for ``a0`` = 255 (an input without alpha), indexed by ``a``: for
    ``Image.point`` over the cut-out's alpha or the mask."""
    alpha_table, keep_table = tables(strength)
    return tuple(alpha_table[255 << 8 :].tolist()), tuple(keep_table[255 << 8 :].tolist())


def cutout(
    original: Image.Image, mask: Image.Image, strength: float = 1.0, threads: int = 1
) -> Image.Image:
    """rembg's cut-out of ``original`` by the L ``mask`` (``naive_cutout``), its removal
    dialled to ``strength`` (:func:`blend_cutout`'s bytes), band by band on up to
    ``threads`` threads: one RGBA image and a few MB beside it, where ``Image.composite``
    makes three full-size RGBA images."""
    if mask.mode != "L" or mask.size != original.size:
        full: Image.Image = naive_cutout(original, mask)
        return blend_cutout(original, full, strength, threads) if strength < 1.0 else full
    out = Image.new("RGBA", original.size, None)  # every band is filled first
    opaque = _opaque(original)
    alpha_row, keep_row = opaque_rows(strength)
    alpha = Image.new("L", out.size, None) if opaque and strength < 1.0 else None

    def band(box: Box) -> None:
        before, m = original.crop(box).convert("RGBA"), mask.crop(box)
        out.paste(0, box)
        out.paste(before, box, m)  # the cut-out: c0 m / 255, alpha m
        if alpha is not None:  # and the original's share back: (c (255 - K) + c0 K) / 255
            out.paste(before, box, m.point(keep_row))
            alpha.paste(m.point(alpha_row), box)

    bands.each(out.size, band, threads)
    if alpha is not None:
        out.putalpha(alpha)
    elif strength < 1.0:
        out = blend_cutout(original, out, strength, threads)
    return out


def blend_cutout(
    original: Image.Image, cutout: Image.Image, strength: float, threads: int = 1
) -> Image.Image:
    """The cut-out with its removal scaled down to ``strength``: written over ``cutout``
    when it is RGBA (the caller hands over an image it owns), else over an RGBA copy.

    Band by band, the original's colours are pasted over the cut-out's with the weight
    ``255 - M`` (Pillow's paste rounds ``(c M + c0 (255 - M)) / 255``); the blended alphas
    are gathered in one L image (1 byte a pixel) and put in last.
    """
    out = cutout if cutout.mode == "RGBA" else cutout.convert("RGBA")
    alpha_table, keep_table = tables(strength)
    # An input without alpha has a0 = 255 everywhere: one row of the tables, via point.
    opaque = _opaque(original)
    alpha_row, keep_row = opaque_rows(strength)
    alpha = Image.new("L", out.size, None)  # every band writes its part

    def band(box: Box) -> None:
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

    bands.each(out.size, band, threads)
    out.putalpha(alpha)
    return out


def blend_mask(mask: Image.Image, strength: float) -> Image.Image:
    """The L mask dialled to ``strength``: ``255 - rint(s * (255 - m))``, exactly."""
    return mask.convert("L").point(opaque_rows(strength)[0])


def over_colour(
    image: Image.Image, colour: tuple[int, int, int, int], threads: int = 1
) -> Image.Image:
    """rembg's ``apply_background_color`` (``Image.alpha_composite`` of ``image`` over a
    solid ``colour``), band by band over ``image`` when it is RGBA (the caller's own),
    else over an RGBA copy: the same per-pixel arithmetic without a full-size backdrop."""
    out = image if image.mode == "RGBA" else image.convert("RGBA")

    def band(box: Box) -> None:
        piece = out.crop(box)
        out.paste(Image.alpha_composite(Image.new("RGBA", piece.size, colour), piece), box)

    bands.each(out.size, band, threads)
    return out


def _opaque(original: Image.Image) -> bool:
    """No alpha in ``original``: a0 = 255 everywhere."""
    return original.mode in ("RGB", "L") and "transparency" not in original.info
