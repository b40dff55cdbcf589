"""Background removal with the real ``rembg`` library, plus a strength dial.

The ONNX session comes from the context's ``SessionProvider`` (created once at start-up,
shared by the worker threads), never from ``rembg.new_session`` here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import numpy as np
import numpy.typing as npt
import rembg
from PIL import Image
from rembg.bg import apply_background_color

from playground_rt.ops.base import OpContext, OpSpec

Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]


class RembgParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Remove the background with a rembg model (``rembg.remove``).

    ``strength`` dials the removal: 1 is full removal, pixel-identical to
    ``rembg.remove``; 0 leaves the image unchanged and opaque as it was; in between, alpha
    is blended linearly, ``a' = a0 - round(strength * (a0 - a))`` (a0: the input's alpha,
    255 for RGB; a: rembg's), and the colours so that the result composited over any
    background is the same blend of the original and of the full removal. With
    ``only_mask`` the same blend applies to the mask. ``bgcolor`` (RGBA) is composited
    under the result last; it is ignored with ``only_mask``. A request's checkpoint, when
    given, replaces ``model``.
    """

    model: Annotated[
        str,
        msgspec.Meta(pattern=r"^[a-z0-9_\-]{1,64}$", description="A rembg model name."),
    ] = "u2netp"
    strength: Annotated[
        float, msgspec.Meta(ge=0, le=1, description="1 = full removal, 0 = unchanged.")
    ] = 1.0
    alpha_matting: Annotated[
        bool, msgspec.Meta(description="Refine edges with alpha matting (slow).")
    ] = False
    alpha_matting_foreground_threshold: Byte = 240
    alpha_matting_background_threshold: Byte = 10
    alpha_matting_erode_size: Annotated[int, msgspec.Meta(ge=0, le=40)] = 10
    only_mask: Annotated[
        bool, msgspec.Meta(description="Return the mask (L) instead of the cutout.")
    ] = False
    post_process_mask: Annotated[
        bool, msgspec.Meta(description="Smooth the mask (rembg's post_process).")
    ] = False
    bgcolor: Annotated[
        tuple[Byte, Byte, Byte, Byte] | None,
        msgspec.Meta(description="RGBA colour put behind the cutout."),
    ] = None


U8 = npt.NDArray[np.uint8]


def _toward(original: U8, removed: U8, strength: float) -> U8:
    """``original - round(strength * (original - removed))`` element-wise, exact in uint8."""
    delta = original.astype(np.int16) - removed.astype(np.int16)
    blended: U8 = (original - np.rint(strength * delta)).astype(np.uint8)
    return blended


def _blend_cutout(original: Image.Image, cutout: Image.Image, strength: float) -> Image.Image:
    """The cutout with its removal scaled down to ``strength`` (see ``RembgParams``)."""
    before = np.asarray(original.convert("RGBA"), dtype=np.float64)
    after = np.asarray(cutout.convert("RGBA"), dtype=np.float64)
    alpha = _toward(before[..., 3].astype(np.uint8), after[..., 3].astype(np.uint8), strength)
    # Blend premultiplied colours, then divide by the blended alpha: over any backdrop
    # the result equals strength x removal + (1 - strength) x original.
    weight_after = strength * after[..., 3:]
    weight_before = (1.0 - strength) * before[..., 3:]
    total = weight_after + weight_before
    premultiplied = weight_after * after[..., :3] + weight_before * before[..., :3]
    colour = np.divide(premultiplied, total, out=after[..., :3].copy(), where=total > 0)
    rgba = np.dstack([np.clip(np.rint(colour), 0, 255).astype(np.uint8), alpha])
    return Image.fromarray(rgba, "RGBA")


def _blend_mask(mask: Image.Image, strength: float) -> Image.Image:
    opaque = np.full((mask.height, mask.width), 255, dtype=np.uint8)
    return Image.fromarray(_toward(opaque, np.asarray(mask, dtype=np.uint8), strength), "L")


def remove_background(image: Image.Image, params: RembgParams, ctx: OpContext) -> Image.Image:
    if ctx.checkpoint is not None:
        session = ctx.models.custom(ctx.checkpoint)
    else:
        session = ctx.models.session(params.model, wide=ctx.wide)
    # Named stages with real steps: the model, alpha matting when asked for, the compositing.
    stages = ["model", "alpha matting", "compose"] if params.alpha_matting else ["model", "compose"]
    ctx.report("model", 0, len(stages))
    # No bgcolor here: it has to go under the strength-blended result, not rembg's.
    removed = rembg.remove(
        image,
        session=_Reporting(session, lambda: ctx.report(stages[1], 1, len(stages))),
        alpha_matting=params.alpha_matting,
        alpha_matting_foreground_threshold=params.alpha_matting_foreground_threshold,
        alpha_matting_background_threshold=params.alpha_matting_background_threshold,
        alpha_matting_erode_size=params.alpha_matting_erode_size,
        only_mask=params.only_mask,
        post_process_mask=params.post_process_mask,
    )
    assert isinstance(removed, Image.Image), type(removed)
    result: Image.Image = removed
    ctx.check_cancelled()
    if params.alpha_matting:
        ctx.report("compose", 2, len(stages))
    if params.strength < 1.0:
        if params.only_mask:
            result = _blend_mask(result.convert("L"), params.strength)
        else:
            result = _blend_cutout(image, result, params.strength)
    if params.bgcolor is not None and not params.only_mask:
        result = apply_background_color(result.convert("RGBA"), params.bgcolor)
    ctx.report("compose", len(stages), len(stages))
    return result


class _Reporting:
    """rembg's session, telling the job when the model is done: ``rembg.remove`` runs the
    model (``predict``) and then alpha matting or the plain cut-out in one call, so this
    is where the stages can be told apart (progress frames name them)."""

    def __init__(self, session: Any, done: Callable[[], None]) -> None:
        self._session = session
        self._done = done

    def predict(self, *args: Any, **kwargs: Any) -> Any:
        masks = self._session.predict(*args, **kwargs)
        self._done()
        return masks

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


SPECS: tuple[OpSpec[Any], ...] = (
    OpSpec(
        "rembg",
        RembgParams,
        remove_background,
        client=False,
        summary="Remove the background with a rembg ONNX model.",
    ),
)
