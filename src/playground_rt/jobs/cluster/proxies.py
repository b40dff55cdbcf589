"""The runs a web node follows: one proxy :class:`~playground_rt.jobs.job.Job` per run,
moved along by the frames of the cluster's history.

A *run* is one queueing of a job (its ``jobs`` stream entry id): a job queued again after
Redis lost it is a new run of the same job. The node keeps a proxy per run it was asked for
(``/fallback`` waits on it, ``GET /api/jobs/{id}`` shows it), which of those runs it queued
itself (it announces their places in the queue), and each run's last known place. Every
history entry of a followed run moves its proxy: ``queued`` updates the place, ``progress``
makes it running, a terminal frame ends it (retired like a local job, told to the
listeners, its waiters woken). A withdrawn entry only takes its taskIds' interest out.

When Redis loses its data (restarted without persistence) the node queues every run it
follows again (:meth:`Proxies.requeue`) from the bytes its proxies still hold: results
already written come back as cache hits, so nothing runs twice for nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from playground_rt import errors, schemas
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.link import LOST, retrying, text
from playground_rt.jobs.job import Job, JobEvent, JobState, without_image
from playground_rt.pipeline.results import ResultStore

log = logging.getLogger("playground_rt.jobs.cluster")

Queue = Callable[[Job, str], Awaitable[list[Any]]]
"""Queues a job again for one interest: the ``submit`` script's reply (forced)."""


class Proxies:
    """Proxies by run. ``active`` is the manager's jobs in flight by id (a proxy is one of
    them while followed); ``retire`` keeps an ended job; ``tell`` gives its end to the
    manager's listeners."""

    def __init__(
        self,
        store: ResultStore,
        active: dict[str, Job],
        retire: Callable[[Job], None],
        tell: Callable[[JobEvent], None],
    ) -> None:
        self.store = store
        self.active = active
        self._retire = retire
        self._tell = tell
        self._jobs: dict[str, Job] = {}
        self._run_of: dict[Job, str] = {}
        self.mine: set[str] = set()
        """Runs this node queued: it announces their positions."""
        self.positions: dict[str, tuple[int, int]] = {}
        """Each followed run's last known ``(position, eta_ms)`` in the cluster's queue."""
        self._listening: dict[str, list[list[wire.HistoryEntry]]] = {}
        """Per job id, the entries read while a submission of it awaits its script."""

    def get(self, run: str) -> Job | None:
        return self._jobs.get(run)

    def __contains__(self, run: str) -> bool:
        return run in self._jobs

    def runs(self) -> list[tuple[str, Job]]:
        return list(self._jobs.items())

    def track(self, job: Job, run: str) -> None:
        self._jobs[run] = job
        self._run_of[job] = run
        self.active[job.id] = job

    def untrack(self, job: Job, run: str) -> None:
        self._jobs.pop(run, None)
        self._run_of.pop(job, None)
        self.mine.discard(run)
        self.positions.pop(run, None)
        if self.active.get(job.id) is job:
            del self.active[job.id]

    def place(self, job: Job) -> tuple[int, int] | None:
        """Where a queued proxy stands in the cluster's queue (as last known)."""
        run = self._run_of.get(job)
        if job.state is JobState.QUEUED and run in self.positions:
            return self.positions[run]
        return None

    def waiting(self, client: str) -> list[Job]:
        """``client``'s proxies still queued."""
        jobs = self._jobs.values()
        return [job for job in jobs if job.client == client and job.state is JobState.QUEUED]

    @contextlib.contextmanager
    def listening(self, job_id: str) -> Iterator[list[wire.HistoryEntry]]:
        """The entries of ``job_id`` read within the block (a fast run may end before the
        script that queued it has answered)."""
        buffer: list[wire.HistoryEntry] = []
        self._listening.setdefault(job_id, []).append(buffer)
        try:
            yield buffer
        finally:
            buffers = self._listening[job_id]
            buffers.remove(buffer)
            if not buffers:
                del self._listening[job_id]

    def follow(self, entry: wire.HistoryEntry) -> None:
        """A history entry: kept for who listens for its job, and it moves its run's proxy
        if this node follows that run."""
        for buffer in self._listening.get(entry.frame.job_id, ()):
            buffer.append(entry)
        job = self._jobs.get(entry.run)
        if job is not None:
            self.apply(job, entry.run, entry)

    def apply(self, job: Job, run: str, entry: wire.HistoryEntry) -> None:
        """Move a proxy along with a frame of its run."""
        frame = entry.frame
        if job.terminal:
            return
        if entry.withdrawn:
            job.interests -= entry.task_ids
        elif isinstance(frame, schemas.Queued):
            self.positions[run] = (frame.position, frame.eta_ms)
        elif isinstance(frame, schemas.Progress):
            if job.state is JobState.QUEUED:
                job.move(JobState.RUNNING)
        elif isinstance(frame, schemas.Completed):
            job.result_path = self.store.path(job.prepared.pipeline_id, job.id)
            job.durations = dict(frame.durations)
            self._end(job, run, JobState.COMPLETED, None, frame)
        elif isinstance(frame, schemas.Failed):
            self._end(job, run, JobState.FAILED, frame.detail, frame)
        else:
            self._end(job, run, JobState.CANCELLED, frame.detail, frame)

    def _end(
        self, job: Job, run: str, state: JobState, detail: str | None, frame: schemas.JobFrame
    ) -> None:
        if job.state is JobState.QUEUED and state is JobState.COMPLETED:
            job.move(JobState.RUNNING)
        job.move(state)
        job.detail = detail
        job.durations.setdefault("total", round((time.perf_counter() - job.created) * 1000, 3))
        job.prepared = without_image(job.prepared)
        self.untrack(job, run)
        self._retire(job)
        self._tell(JobEvent(frame, job.task_ids))  # telemetry (the hub reads the history)
        job.done.set()

    async def requeue(self, queue: Queue, stop: asyncio.Event) -> None:
        """Queue every run in flight again, one interest at a time (retried while Redis is
        away, until ``stop``), following the new runs."""
        for run, job in self.runs():
            if job.terminal:
                continue
            log.warning("cluster: queueing job %s again (Redis lost it)", job.id)
            interests = sorted(job.interests) or [f"anon:{uuid.uuid4().hex}"]
            self.untrack(job, run)
            if job.state is JobState.RUNNING:
                job.state = JobState.QUEUED  # not a transition: a new run of the same job
            for interest in interests:
                if not await self._requeue_one(queue, job, interest, stop):
                    return

    async def _requeue_one(
        self, queue: Queue, job: Job, interest: str, stop: asyncio.Event
    ) -> bool:
        retry_on = (*LOST, errors.NotReady)
        reply = await retrying(lambda: queue(job, interest), f"requeue {job.id}", stop, retry_on)
        if reply is None:
            return False
        status, run = text(reply[0]), text(reply[1]) if len(reply) > 2 else ""
        if status in ("queued", "joined") and run not in self:
            self.track(job, run)
            self.mine.add(run)
            for entry in reply[-1]:
                if entry.run == run:
                    self.apply(job, run, entry)
        return True
