"""The model's masks, computed once per (image, model) and kept in a bounded LRU.

``rembg.remove`` is two parts: the *mask* (``session.predict``: normalise, run the model,
scale the mask back to the image) and the *cut-out* (post-processing, matting or the plain
cut-out). :func:`remove` reproduces ``rembg.remove`` pixel for pixel (tests compare them
for several params), but takes the mask from a :class:`MaskCache` when the same image went
through the same model before; so a change of ``strength``, ``only_mask``, ``bgcolor``,
``post_process_mask`` or the matting thresholds re-blends without inference.

The key is (``OpContext.image_key``, the image's size and mode, the model): ``image_key``
is the sha256 of the bytes the job's image was decoded from (``pipelines.apply`` derives a
new one after each op, so an op further down a pipeline keys on what it was given). The
model is its rembg name for the registry's named models (whatever their thread count:
onnxruntime's CPU results do not depend on it), or the very session object for a request's
custom ``.onnx``: the registry loads a replaced file into a new session, so a mask never
outlives the model that made it. Without an ``image_key`` or a cache nothing is kept.

Bound: the masks' pixel bytes (one byte per pixel per mask: 12 MB for 12 MP) never exceed
``capacity_bytes`` (the ``mask_cache_bytes`` setting, 256 MiB by default, 0 to keep none);
the least recently used are evicted first; a mask bigger than the whole bound is not kept.
A mask being computed is computed once: a second job for the same key waits for it
(checking its own cancellation meanwhile) rather than running the model again.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from PIL import Image
from rembg.bg import (
    alpha_matting_cutout,
    decontaminate_cutout,
    fix_image_orientation,
    get_concat_v_multi,
    naive_cutout,
    post_process,
)

from playground_rt.pipeline.lru import SizedLRU

if TYPE_CHECKING:
    from rembg.sessions.base import BaseSession

__all__ = ["MaskCache", "MaskJob", "MaskKey", "remove"]

MaskKey = tuple[str, tuple[int, int], str, str]
"""(image key, (width, height), mode, model): see the module docstring."""
Masks = tuple[Image.Image, ...]


class MaskJob(Protocol):
    """What :func:`remove` reads of the job it runs for (an ``ops.base.OpContext``: the
    protocol keeps this store below the ops that hold it)."""

    @property
    def masks(self) -> MaskCache | None: ...
    @property
    def image_key(self) -> str | None: ...
    @property
    def checkpoint(self) -> Path | None: ...
    @property
    def check_cancelled(self) -> Callable[[], None]: ...
    @property
    def outline(self) -> Callable[[Image.Image, Image.Image], None]: ...


_WAIT_S = 0.05  # how often a job waiting for another's mask checks its own cancellation
_ORIENTATION = 0x0112


@dataclass(frozen=True)
class _Entry:
    masks: Masks
    nbytes: int
    session: weakref.ref[BaseSession] | None
    """The custom session that made the masks; ``None`` for a named model."""

    def size(self) -> int:
        return self.nbytes


@dataclass
class _Gate:
    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


class MaskCache:
    """Masks by key, least recently used evicted first, bounded by ``capacity_bytes``.

    Thread-safe: the executor's workers share one. The masks handed out are shared and
    must not be modified (Pillow images are mutable): :func:`remove` only reads them.
    """

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.hits = 0
        self.misses = 0
        self._entries: SizedLRU[MaskKey, _Entry] = SizedLRU(capacity_bytes, _Entry.size)
        self._lock = threading.Lock()  # the counters and the gates
        self._gates: dict[MaskKey, _Gate] = {}

    @property
    def nbytes(self) -> int:
        """The pixel bytes held now (never above ``capacity_bytes``)."""
        return self._entries.nbytes

    @property
    def evictions(self) -> int:
        return self._entries.evictions

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: MaskKey, session: BaseSession | None = None) -> Masks | None:
        """The masks kept for ``key`` (made by ``session`` when it is a custom one), or None."""
        entry = self._entries.get(key, touch=False)
        if entry is None or (entry.session is not None and entry.session() is not session):
            return None
        self._entries.get(key)  # now the most recently used
        return entry.masks

    def put(self, key: MaskKey, masks: Masks, session: BaseSession | None = None) -> bool:
        """Keep ``masks`` (``session``: the custom session that made them); False when they
        are bigger than the whole bound and so not kept."""
        nbytes = sum(mask.width * mask.height * len(mask.getbands()) for mask in masks)
        entry = _Entry(masks, nbytes, weakref.ref(session) if session is not None else None)
        return self._entries.put(key, entry)

    def masks(
        self,
        key: MaskKey,
        compute: Callable[[], Masks],
        *,
        session: BaseSession | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> tuple[Masks, bool]:
        """``(masks, hit)``: the kept masks, or ``compute()``'s, kept for next time.

        One ``compute`` per key at a time: a concurrent caller waits for it, calling
        ``check()`` (which may raise, e.g. ``JobCancelled``) every few tens of ms.
        """
        if (found := self.get(key, session)) is not None:
            self._count(hit=True)
            return found, True
        gate = self._enter(key)
        try:
            while not gate.lock.acquire(timeout=_WAIT_S):
                check()
            try:
                if (found := self.get(key, session)) is not None:
                    self._count(hit=True)
                    return found, True
                self._count(hit=False)
                made = compute()
                self.put(key, made, session)
                return made, False
            finally:
                gate.lock.release()
        finally:
            self._leave(key, gate)

    def _count(self, hit: bool) -> None:
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    def _enter(self, key: MaskKey) -> _Gate:
        with self._lock:
            gate = self._gates.setdefault(key, _Gate())
            gate.users += 1
            return gate

    def _leave(self, key: MaskKey, gate: _Gate) -> None:
        with self._lock:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]


def remove(
    ctx: MaskJob,
    image: Image.Image,
    *,
    session: BaseSession,
    alpha_matting: bool = False,
    alpha_matting_foreground_threshold: int = 240,
    alpha_matting_background_threshold: int = 10,
    alpha_matting_erode_size: int = 10,
    only_mask: bool = False,
    post_process_mask: bool = False,
    cut: Callable[[Image.Image, Image.Image], Image.Image] = naive_cutout,
) -> Image.Image:
    """``rembg.remove(image, session=session, ...)`` for a Pillow image, with the mask from
    ``ctx.masks`` when it was computed before (see the module docstring). The first mask
    goes to ``ctx.outline`` as soon as it is known. ``cut(image, mask)`` makes the plain
    cut-out (rembg's ``naive_cutout``; the rembg op's is ``ops.compose.cutout``, which may
    also dial it)."""
    upright = _upright(image)
    masks = _predict(ctx, upright, session)
    ctx.check_cancelled()
    if masks:
        ctx.outline(upright, masks[0])  # the job's outline (playground_rt.pipeline.outlines)
    cutouts = []
    for kept in masks:
        mask = Image.fromarray(post_process(np.array(kept))) if post_process_mask else kept
        if only_mask:
            cutouts.append(mask.copy() if mask is kept else mask)  # never hand out a kept one
        elif alpha_matting:
            try:
                cutout = alpha_matting_cutout(
                    upright,
                    mask,
                    alpha_matting_foreground_threshold,
                    alpha_matting_background_threshold,
                    alpha_matting_erode_size,
                )
            except ValueError:  # rembg's own fallback when the trimap has no certain region
                cutout = decontaminate_cutout(upright, mask)
            cutouts.append(cutout)
        else:
            cutouts.append(cut(upright, mask))
    # No mask at all: the image itself, as a copy (the caller writes over what it gets, and
    # the image may be a kept one: ``pipeline.decoded``).
    result: Image.Image = get_concat_v_multi(cutouts) if cutouts else upright.copy()
    return result


def _predict(ctx: MaskJob, image: Image.Image, session: BaseSession) -> Masks:
    def compute() -> Masks:
        return tuple(session.predict(image))

    if ctx.masks is None or ctx.image_key is None:
        return compute()
    custom = ctx.checkpoint is not None
    model = f"custom:{id(session)}" if custom else f"model:{session.model_name}"
    key: MaskKey = (ctx.image_key, image.size, image.mode, model)
    owner = session if custom else None
    masks, _ = ctx.masks.masks(key, compute, session=owner, check=ctx.check_cancelled)
    return masks


def _upright(image: Image.Image) -> Image.Image:
    """rembg's ``fix_image_orientation``, without its copy of an image already upright
    (``images.decode`` has applied the EXIF orientation; nothing here modifies the image)."""
    if image.getexif().get(_ORIENTATION, 1) in (2, 3, 4, 5, 6, 7, 8):
        upright: Image.Image = fix_image_orientation(image)
        return upright
    return image
