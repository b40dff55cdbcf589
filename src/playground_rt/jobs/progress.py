"""A job's ``progress`` frames, at most one per ``PROGRESS_INTERVAL_S``.

Ops report every stage and step from their threads; a socket needs no more than a few a
second. The newest report within the interval wins and goes out at its end (a timer on the
loop), so the last stage is never lost. An outline's frame (``outline_url``) goes out at
once: the throttle would delay it, and a job that ends within the interval would never send
it. A job that ends drops what is pending (:meth:`Progress.stop`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from playground_rt import schemas
from playground_rt.jobs.job import Job

PROGRESS_INTERVAL_S = 0.1


class Progress:
    """Throttles the ``progress`` frames of every job it is told of, on ``loop``; ``emit``
    sends one."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, emit: Callable[[Job, schemas.JobFrame], None]
    ) -> None:
        self._loop = loop
        self._emit = emit

    def report(self, job: Job, frame: schemas.Progress) -> None:
        """A stage or step of ``job`` (on the loop)."""
        if job.terminal:
            return
        if job.outline_url is not None and frame.outline_url is None:
            frame = msgspec.structs.replace(frame, outline_url=job.outline_url)
        job.progress = frame
        now = time.monotonic()
        wait = job.last_progress + PROGRESS_INTERVAL_S - now
        if wait <= 0:
            job.last_progress = now
            self._emit(job, frame)
            return
        job.pending_progress = frame
        if job.flush is None:
            job.flush = self._loop.call_later(wait, self._flush, job)

    def outlined(self, job: Job, url: str) -> None:
        """``job``'s outline is at ``url``: the latest stage goes out now, with the URL."""
        job.outline_url = url
        if job.terminal:
            return
        base = job.progress or schemas.Progress(job_id=job.id, stage="rembg", step=0, total=1)
        job.pending_progress = None  # made before the URL was known: this frame replaces it
        job.last_progress = 0.0
        self.report(job, msgspec.structs.replace(base, outline_url=url))

    @staticmethod
    def stop(job: Job) -> None:
        """``job`` ended: what is pending is not sent."""
        if job.flush is not None:
            job.flush.cancel()
            job.flush = None

    def _flush(self, job: Job) -> None:
        job.flush = None
        frame, job.pending_progress = job.pending_progress, None
        if frame is not None and not job.terminal:
            job.last_progress = time.monotonic()
            self._emit(job, frame)
