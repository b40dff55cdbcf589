"""Geometry ops: resize, crop and the exact rotations and flips."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from PIL import Image

from playground_rt import errors
from playground_rt.pipeline.ops.base import OpContext, OpSpec

MAX_SIDE = 8192

Side = Annotated[int, msgspec.Meta(ge=1, le=MAX_SIDE)]
Margin = Annotated[int, msgspec.Meta(ge=0, le=65535, description="Pixels removed from this edge.")]


class ResizeParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Resize with Pillow's antialiased bilinear filter.

    At least one of ``width`` and ``height`` is required; when only one is given the other
    keeps the aspect ratio, rounded half up (at least 1 pixel).
    """

    width: Annotated[Side | None, msgspec.Meta(description="Target width in pixels.")] = None
    height: Annotated[Side | None, msgspec.Meta(description="Target height in pixels.")] = None

    def __post_init__(self) -> None:
        if self.width is None and self.height is None:
            raise ValueError("at least one of width and height is required")


def _scaled(side: int, numerator: int, denominator: int) -> int:
    """``side * numerator / denominator`` rounded half up, in integers (no float ties)."""
    return max(1, (2 * side * numerator + denominator) // (2 * denominator))


def target_size(size: tuple[int, int], params: ResizeParams) -> tuple[int, int]:
    """The ``(width, height)`` that :func:`resize` produces from an image of ``size``
    (``InvalidParams`` when keeping the aspect ratio gives a side over ``MAX_SIDE``; intake
    calls this with the probed size, so such a request is refused before it runs)."""
    w0, h0 = size
    if params.width is not None and params.height is not None:
        return params.width, params.height
    if params.width is not None:
        w, h = params.width, _scaled(params.width, h0, w0)
    else:
        assert params.height is not None
        w, h = _scaled(params.height, w0, h0), params.height
    if w > MAX_SIDE or h > MAX_SIDE:
        raise errors.InvalidParams(
            f"resize: keeping the aspect ratio of a {w0}x{h0} image "
            f"gives {w}x{h}; each side must be at most {MAX_SIDE}"
        )
    return w, h


def resize(image: Image.Image, params: ResizeParams, ctx: OpContext) -> Image.Image:
    w, h = target_size(image.size, params)
    # Pillow premultiplies RGBA/LA by alpha around the resample, so transparent pixels'
    # colours do not bleed into their neighbours.
    return image.resize((w, h), Image.Resampling.BILINEAR)


class CropParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Remove the given number of pixels from each edge."""

    left: Margin = 0
    top: Margin = 0
    right: Margin = 0
    bottom: Margin = 0


def crop_size(size: tuple[int, int], params: CropParams) -> tuple[int, int]:
    """The ``(width, height)`` :func:`crop` leaves (``InvalidParams`` when nothing)."""
    width = size[0] - params.left - params.right
    height = size[1] - params.top - params.bottom
    if width < 1 or height < 1:
        raise errors.InvalidParams(
            f"crop: removing left={params.left} right={params.right} top={params.top} "
            f"bottom={params.bottom} from a {size[0]}x{size[1]} image leaves nothing"
        )
    return width, height


def crop(image: Image.Image, params: CropParams, ctx: OpContext) -> Image.Image:
    width, height = crop_size(image.size, params)
    return image.crop((params.left, params.top, params.left + width, params.top + height))


class RotateParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Rotate counter-clockwise by a multiple of 90 degrees (exact, no resampling)."""

    degrees: Annotated[
        Literal[0, 90, 180, 270], msgspec.Meta(description="Counter-clockwise angle.")
    ] = 90


_ROTATIONS = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


def rotate(image: Image.Image, params: RotateParams, ctx: OpContext) -> Image.Image:
    if params.degrees == 0:
        return image.copy()
    return image.transpose(_ROTATIONS[params.degrees])


class FlipParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Mirror the image: ``horizontal`` swaps left and right, ``vertical`` top and bottom."""

    direction: Literal["horizontal", "vertical"] = "horizontal"


def flip(image: Image.Image, params: FlipParams, ctx: OpContext) -> Image.Image:
    if params.direction == "horizontal":
        return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)


SPECS: tuple[OpSpec[Any], ...] = (
    OpSpec(
        "resize",
        ResizeParams,
        resize,
        client=True,
        summary="Bilinear resize; one side alone keeps the aspect ratio.",
        size=target_size,
    ),
    OpSpec(
        "crop",
        CropParams,
        crop,
        client=False,
        summary="Remove pixels from each edge.",
        size=crop_size,
    ),
    OpSpec(
        "rotate",
        RotateParams,
        rotate,
        client=True,
        summary="Rotate counter-clockwise by 0, 90, 180 or 270 degrees.",
        size=lambda s, p: (s[1], s[0]) if p.degrees in (90, 270) else s,
    ),
    OpSpec("flip", FlipParams, flip, client=True, summary="Mirror horizontally or vertically."),
)
