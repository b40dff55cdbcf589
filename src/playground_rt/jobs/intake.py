"""Intake: a request becomes a validated, keyed :class:`~playground_rt.jobs.job.Prepared`.

Everything a client can get wrong is checked here, before anything is queued or handed to
the page: the pipeline and its params, the model or ``checkpoint_path``, the image (base64
or a path under the data root, with the size limits, and its header: ``images.probe``) and
the result's size. The cache key hashes the image bytes, the canonical params, the pipeline
version and the checkpoint's bytes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.jobs.job import Prepared
from playground_rt.paths import confine
from playground_rt.pipeline import images, registry
from playground_rt.pipeline.ops.base import SessionProvider
from playground_rt.pipeline.sessions import check_checkpoint_name

INLINE_BASE64 = 512 * 1024
"""Base64 images up to this size are decoded and hashed on the loop (well under 1 ms); their
header is probed on a thread like any other (``images.probe``)."""


class Intake:
    def __init__(
        self,
        settings: Settings,
        models: SessionProvider,
        pipelines: registry.Pipelines = registry.PIPELINES,
    ) -> None:
        self.settings = settings
        self.models = models
        self.pipelines = pipelines
        self.limits = images.Limits(settings.max_image_bytes, settings.max_pixels)
        self._digest_file = registry.FileDigests()

    async def prepare(self, request: schemas.PipelineRequest) -> Prepared:
        """Validate a request without running it (``PlaygroundError`` on bad input)."""
        plan = registry.get_pipeline(request.pipeline_id, self.pipelines).plan(request.params)
        notes: list[str] = []
        checkpoint = await self._checkpoint(request.checkpoint_path, plan, notes)
        if checkpoint is None:
            for step in plan.steps:
                if model := getattr(step.params, "model", None):
                    self.models.require(model)
        if request.image_path is None and len(request.image_base64 or "") <= INLINE_BASE64:
            source = self._read_image(request, notes)  # cheaper than the hop to a thread
        else:
            source = await asyncio.to_thread(self._read_image, request, notes)
        # Off the loop even for small images: Pillow inflates a PNG's text chunks at open
        # (up to 64 MB, about 0.15 s, from a 74 KB file).
        probed = await asyncio.to_thread(images.probe, source.data, self.limits)
        self._check_output(plan, probed.size)
        ckpt_digest = await asyncio.to_thread(self._digest_file, checkpoint) if checkpoint else ""
        digest = registry.digest(plan, source.sha256, ckpt_digest)
        pid = plan.pipeline.id
        return Prepared(
            plan,
            source,
            checkpoint,
            registry.job_id(pid, digest),
            registry.cache_key(pid, digest),
            tuple(notes),
            probed.size,
        )

    # --- validation helpers ----------------------------------------------------------------

    async def _checkpoint(
        self, given: str | None, plan: registry.Plan, notes: list[str]
    ) -> Path | None:
        if given is None:
            return None
        path = confine(self.settings.outputs_root, given, field="checkpoint_path")
        if not plan.uses_checkpoint:
            notes.append(f"checkpoint_path is not used by pipeline {plan.pipeline.id!r}")
            return None
        check_checkpoint_name(given)
        if not os.path.isfile(path):  # Path.is_file raises on ENAMETOOLONG (3.11)
            raise errors.NotFound(
                f"checkpoint_path {given!r} does not exist under the outputs root"
            )
        return path

    def _read_image(self, request: schemas.PipelineRequest, notes: list[str]) -> images.Source:
        if request.image_base64 is not None:
            if request.image_path is not None:
                confine(self.settings.data_root, request.image_path, field="image_path")
                notes.append("image_base64 and image_path both given; image_base64 was used")
            return images.from_base64(request.image_base64, self.limits)
        if request.image_path is not None:
            return images.from_path(self.settings.data_root, request.image_path, self.limits)
        raise errors.InvalidParams("one of image_base64 and image_path is required")

    def _check_output(self, plan: registry.Plan, size: tuple[int, int]) -> None:
        """The result's size from the probed input size: an op's own ``InvalidParams`` when
        it cannot produce it (a resize side over 8192, a crop leaving nothing), ``TooLarge``
        over ``max_pixels``."""
        width, height = registry.output_size(plan, size)
        if width * height > self.settings.max_pixels:
            raise errors.TooLarge(
                f"the result would be {width}x{height} = {width * height} pixels; "
                f"max_pixels={self.settings.max_pixels}"
            )
