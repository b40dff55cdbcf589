"""Neighbourhood filters: box blur and unsharp mask."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from PIL import Image, ImageFilter

from playground_rt.pipeline.ops.base import OpContext, OpSpec
from playground_rt.pipeline.ops.tone import join_alpha, split_alpha


class BlurParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Box blur: every pixel becomes the mean of the kernelSize x kernelSize window around it.

    Edge pixels are extended beyond the border. Every band is blurred, alpha included
    (as Pillow's ``BoxBlur`` does). ``kernelSize`` must be odd; 1 leaves the image as is.
    """

    # camelCase: the page's and the CLI's name for it.
    kernelSize: Annotated[
        int,
        msgspec.Meta(ge=1, le=31, description="Odd window side in pixels.", extra={"odd": True}),
    ] = 5

    def __post_init__(self) -> None:
        # msgspec has no "odd" constraint; a ValueError here becomes a ValidationError,
        # whose message ``ops.parse_params`` prefixes with the field's path. The field's
        # ``extra={"odd": True}`` tells the page (``GET /api/pipelines``, ``odd_params``).
        if self.kernelSize % 2 == 0:
            raise ValueError(f"kernelSize must be odd, got {self.kernelSize}")


def blur(image: Image.Image, params: BlurParams, ctx: OpContext) -> Image.Image:
    # A kxk window is a box of radius (k-1)/2; radius 0 is Pillow's identity.
    return image.filter(ImageFilter.BoxBlur((params.kernelSize - 1) // 2))


class SharpenParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Unsharp mask: add ``amount`` x (image - Gaussian blur of ``radius``) to the image.

    Only differences larger than ``threshold`` are amplified, so flat noisy areas stay
    flat. Alpha is left untouched.
    """

    amount: Annotated[
        float, msgspec.Meta(ge=0, le=5, description="Strength; 1 adds the full difference.")
    ] = 1.0
    radius: Annotated[
        float, msgspec.Meta(ge=0.1, le=10, description="Gaussian blur radius in pixels.")
    ] = 2.0
    threshold: Annotated[
        int, msgspec.Meta(ge=0, le=255, description="Smallest difference that is sharpened.")
    ] = 3


def sharpen(image: Image.Image, params: SharpenParams, ctx: OpContext) -> Image.Image:
    colour, alpha = split_alpha(image)
    mask = ImageFilter.UnsharpMask(
        params.radius, percent=round(params.amount * 100), threshold=params.threshold
    )
    return join_alpha(colour.filter(mask), alpha)


SPECS: tuple[OpSpec[Any], ...] = (
    OpSpec(
        "blur",
        BlurParams,
        blur,
        client=True,
        summary="Box blur over an odd kernelSize x kernelSize window.",
    ),
    OpSpec(
        "sharpen",
        SharpenParams,
        sharpen,
        client=False,
        summary="Unsharp mask.",
    ),
)
