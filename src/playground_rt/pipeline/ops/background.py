"""Background removal with the real ``rembg`` library, plus a strength dial.

The ONNX session comes from the context's ``SessionProvider`` (created once at start-up,
shared by the worker threads), never from ``rembg.new_session`` here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Annotated, Any

import msgspec
import numpy as np
from PIL import Image
from rembg.bg import alpha_matting_cutout, decontaminate_cutout

from playground_rt.pipeline import arenas, masks
from playground_rt.pipeline.ops import compose
from playground_rt.pipeline.ops.base import OpContext, OpSpec

Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]


class RembgParams(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Remove the background with a rembg model (``rembg.remove``).

    ``strength`` dials the removal: 1 is full removal, pixel-identical to
    ``rembg.remove``; 0 leaves the image unchanged and opaque as it was; in between, alpha
    is blended linearly, ``a' = a0 - round(strength * (a0 - a))`` (a0: the input's alpha,
    255 for RGB; a: rembg's), and the colours so that the result composited over any
    background is the same blend of the original and of the full removal (to within one
    level of 255: the weight is rounded to 1/255, see ``ops/compose.py``). With
    ``only_mask`` the same blend applies to the mask. ``bgcolor`` (RGBA) is composited
    under the result last; it is ignored with ``only_mask``. A request's checkpoint, when
    given, replaces ``model``.

    ``alpha_matting`` (pymatting's closed-form matte, about 500 bytes of memory per pixel)
    runs at most on ``MATTING_MAX_PIXELS`` = 1 MP: a larger image is matted on a copy
    scaled down to 1 MP (the erode size scaled alike), and the matte (alpha and the
    unmixed edge colours) is scaled back up; pixels it leaves fully opaque keep their
    original colours. Images of up to 1 MP are matted exactly as ``rembg.remove`` does.
    An image with a side under 3 pixels (the matte's 3x3 windows do not fit) is cut out
    without matting, as if ``alpha_matting`` were false.
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


MATTING_MAX_PIXELS = 1_000_000
"""Pixels alpha matting works on (see ``RembgParams``): about 0.65 GB at its peak."""
MATTING_MIN_SIDE = 3
"""Closed-form matting solves over 3x3 windows; a thinner image has none."""


def _scaled_matting(image: Image.Image, mask: Image.Image, params: RembgParams) -> Image.Image:
    """rembg's alpha-matting cutout of an image over ``MATTING_MAX_PIXELS``, computed on a
    copy scaled down to that size (see ``RembgParams``)."""
    scale = math.sqrt(MATTING_MAX_PIXELS / (image.width * image.height))
    small = (
        max(MATTING_MIN_SIDE, int(image.width * scale)),
        max(MATTING_MIN_SIDE, int(image.height * scale)),
    )
    erode = params.alpha_matting_erode_size
    rgb = image.convert("RGB")
    small_rgb = rgb.resize(small, Image.Resampling.BOX)
    small_mask = mask.convert("L").resize(small, Image.Resampling.BOX)
    try:
        matte = alpha_matting_cutout(
            small_rgb,
            small_mask,
            params.alpha_matting_foreground_threshold,
            params.alpha_matting_background_threshold,
            max(1, round(erode * scale)) if erode else 0,
        )
    except ValueError:  # no definite foreground or background: rembg's own fallback
        matte = decontaminate_cutout(small_rgb, small_mask)
    cutout = np.array(matte.resize(image.size, Image.Resampling.BILINEAR))
    opaque = cutout[..., 3] == 255
    np.copyto(cutout[..., :3], np.asarray(rgb), where=opaque[..., None])
    return Image.fromarray(cutout, "RGBA")


def remove_background(image: Image.Image, params: RembgParams, ctx: OpContext) -> Image.Image:
    if ctx.checkpoint is not None:
        session = ctx.models.custom(ctx.checkpoint)
    else:
        session = ctx.models.session(params.model, wide=ctx.threads > 1)
    matting = params.alpha_matting and not params.only_mask and min(image.size) >= MATTING_MIN_SIDE
    scaled = matting and image.width * image.height > MATTING_MAX_PIXELS
    # Named stages with real steps: the model, alpha matting when it runs, the compositing.
    stages = ["model", "alpha matting", "compose"] if matting else ["model", "compose"]
    ctx.report("model", 0, len(stages))
    # The plain cut-out is made already dialled to ``strength`` (ops/compose.py); the mask
    # and a matted cut-out are dialled after. No bgcolor here: it goes under the dialled
    # result, not rembg's.
    dialled = not params.only_mask and not matting
    cut = functools.partial(
        compose.cutout, strength=params.strength if dialled else 1.0, threads=ctx.threads
    )
    with arenas.released_after_run(image.width * image.height >= arenas.BIG_IMAGE_PIXELS):
        removed = masks.remove(  # rembg.remove, the mask computed once (pipeline.masks)
            ctx,
            image,
            session=_Reporting(session, lambda: ctx.report(stages[1], 1, len(stages))),
            alpha_matting=matting and not scaled,
            alpha_matting_foreground_threshold=params.alpha_matting_foreground_threshold,
            alpha_matting_background_threshold=params.alpha_matting_background_threshold,
            alpha_matting_erode_size=params.alpha_matting_erode_size,
            only_mask=params.only_mask or scaled,
            post_process_mask=params.post_process_mask,
            cut=cut,
        )
    assert isinstance(removed, Image.Image), type(removed)
    result: Image.Image = removed
    ctx.check_cancelled()
    if scaled:
        result = _scaled_matting(image, result, params)
        ctx.check_cancelled()
    if matting:
        ctx.report("compose", 2, len(stages))
    # ``result`` is this job's own image (masks.remove never hands out a kept mask), so
    # the blend and the colour are written over it, band by band (ops/compose.py).
    if params.strength < 1.0 and not dialled:
        if params.only_mask:
            result = compose.blend_mask(result, params.strength)
        else:
            result = compose.blend_cutout(image, result, params.strength, ctx.threads)
    if params.bgcolor is not None and not params.only_mask:
        result = compose.over_colour(result, params.bgcolor, ctx.threads)
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


CLIENT_MODELS = ("u2netp",)
"""Models the page runs itself (onnxruntime-web, ``GET /models/{model}.onnx``)."""


def client_blocker(params: RembgParams) -> str | None:
    """Why the page's model worker cannot run ``params`` (None when it can)."""
    if params.model not in CLIENT_MODELS:
        return f"rembg model {params.model!r} runs on the server only"
    if params.alpha_matting:
        return "rembg alpha_matting runs on the server only"
    if params.post_process_mask:
        return "rembg post_process_mask runs on the server only"
    return None


SPECS: tuple[OpSpec[Any], ...] = (
    OpSpec(
        "rembg",
        RembgParams,
        remove_background,
        client=True,
        summary="Remove the background with a rembg ONNX model.",
        client_check=client_blocker,
    ),
)
