"""A job's body on its worker thread: decode, the ops, encode, write.

What the thread learns on the way goes back to the event loop, never handled here: each
``progress`` report and the outline's URL (``outlines``, once the model's mask is known) are
handed to the manager's callbacks with ``call_soon_threadsafe``. The written result stays
*pinned* (retention will not remove it) until the manager has told the job's followers, and
then :meth:`JobWork.release` unpins it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from playground_rt import schemas
from playground_rt.config import Settings
from playground_rt.jobs.job import Job
from playground_rt.jobs.retention import Retention
from playground_rt.pipeline import arenas, images, outlines, registry
from playground_rt.pipeline.decoded import DecodedImages
from playground_rt.pipeline.masks import MaskCache
from playground_rt.pipeline.ops.base import OpContext, SessionProvider
from playground_rt.pipeline.results import ResultStore


class JobWork:
    """The thread side of :class:`~playground_rt.jobs.manager.JobManager` (its executor's
    ``run``); the masks and outlines it keeps between jobs."""

    def __init__(
        self,
        settings: Settings,
        store: ResultStore,
        retention: Retention,
        models: SessionProvider,
        limits: images.Limits,
    ) -> None:
        self.settings = settings
        self.store = store
        self.retention = retention
        self.models = models
        self.limits = limits
        self.masks = MaskCache(settings.mask_cache_bytes)
        self.decoded = DecodedImages(settings.decoded_cache_bytes)
        self.outlines = outlines.OutlineStore()
        self._holding = threading.Lock()  # a result's pin: handed from its writer to _finish
        self._loop: asyncio.AbstractEventLoop | None = None
        self._progress: Callable[[Job, schemas.Progress], None] = lambda job, frame: None
        self._outlined: Callable[[Job, str], None] = lambda job, url: None

    def connect(
        self,
        loop: asyncio.AbstractEventLoop,
        progress: Callable[[Job, schemas.Progress], None],
        outlined: Callable[[Job, str], None],
    ) -> None:
        """Where reports go: ``progress`` and ``outlined`` run on ``loop``."""
        self._loop, self._progress, self._outlined = loop, progress, outlined

    def run(self, job: Job) -> Path:
        job.check()  # cancelled between being taken and reaching its thread
        started = time.perf_counter()
        image = self._decoded(job)
        job.durations["decode"] = ms(time.perf_counter() - started)
        steps = job.prepared.plan.steps
        threads = self.settings.job_threads(alone=job.wide)
        ctx = OpContext(
            models=self.models,
            report=lambda stage, step, total: self._report(job, stage, step, total),
            check_cancelled=job.check,
            checkpoint=job.prepared.checkpoint,
            threads=threads,
            image_key=job.prepared.source.sha256,
            masks=self.masks,
            outline=lambda image, mask: self._outline(job, image, mask),
        )
        ops_started = time.perf_counter()
        image = registry.apply(steps, image, ctx, job.durations)
        job.durations["ops"] = ms(time.perf_counter() - ops_started)
        job.check()
        started = time.perf_counter()
        data = images.encode_png_pieces(image, threads)  # written piece by piece, never joined
        job.durations["encode"] = ms(time.perf_counter() - started)
        started = time.perf_counter()
        path = self.retention.write(self.store, job.prepared.pipeline_id, job.id, data)
        job.durations["write"] = ms(time.perf_counter() - started)
        self._hold(job, path)
        if job.prepared.size[0] * job.prepared.size[1] >= arenas.BIG_IMAGE_PIXELS:
            del image, data
            arenas.malloc_trim()  # the next big job may run on the other worker's heap
        return path

    def _decoded(self, job: Job) -> Image.Image:
        """The job's image: kept from an earlier job on the same bytes, else decoded (after
        making room for it among the kept ones) and kept (``pipeline.decoded``)."""
        source = job.prepared.source
        image = self.decoded.get(source.sha256)
        if image is None:
            width, height = job.prepared.size
            self.decoded.reserve(width * height * 4)
            image = images.decode(source.data, self.limits)
            self.decoded.put(source.sha256, image)
        return image

    def _hold(self, job: Job, path: Path) -> None:
        """The written result stays pinned until ``_finish`` told the job's followers; a job
        already finished (timed out, cancelled) will tell nobody: unpinned at once."""
        with self._holding:
            if not job.terminal:
                job.held = path
                return
        self.retention.unpin(path)

    def release(self, job: Job) -> None:
        """After the terminal frame: the result may go when the bounds say so."""
        with self._holding:
            path, job.held = job.held, None
        if path is not None:
            self.retention.unpin(path)
            self.retention.nudge()

    def _report(self, job: Job, stage: str, step: int, total: int) -> None:
        frame = schemas.Progress(job_id=job.id, stage=stage, step=step, total=total)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._progress, job, frame)

    def _outline(self, job: Job, image: Image.Image, mask: Image.Image) -> None:
        """The mask is known: a big job's outline is rendered, kept and announced now."""
        if job.outline_url is not None or not outlines.wanted(image):
            return
        started = time.perf_counter()
        self.outlines.put(job.id, outlines.render(image, mask))
        job.durations["outline"] = ms(time.perf_counter() - started)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._outlined, job, outlines.url(job.id))


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
