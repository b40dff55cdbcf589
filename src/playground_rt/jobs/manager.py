"""The job lifecycle: validate, key, route, run once, tell everyone who asked.

A request becomes a :class:`~playground_rt.jobs.job.Prepared` (``intake``: pipeline plan, image
bytes, cache key). Then, in order: an identical job already queued or running is *joined*
(single-flight: it runs once); a whole result on disk is answered at once (cache hit); a
client-capable preview is left to the browser's workers; anything else is queued on the
executor.

A queued job holds what it was sent (the image bytes), never pixels: the image is decoded
on the worker thread that runs it, inside its time budget and after the queue admitted it,
so a full queue refuses without decoding and a hostile file costs one worker slot.

A job is wanted by *interests*: the taskIds that asked for it (or an anonymous token). A
withdrawal (a cancel with a taskId, or a supersede) removes one interest and tells that
taskId's followers ``cancelled``; the job itself is cancelled when no interest is left, so
one tab cancelling never kills the same work another tab is waiting for. Only an outright
:meth:`JobManager.cancel` (the API requires the server token for it) stops a job for
everyone. A cancelled job is terminal at once: its followers hear it then, and an
identical request arriving while its thread winds down starts a new job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.jobs import routing, views
from playground_rt.jobs.executor import Executor
from playground_rt.jobs.intake import Intake
from playground_rt.jobs.job import (
    Job,
    JobEvent,
    JobState,
    Listener,
    Mode,
    Prepared,
    Submission,
    without_image,
)
from playground_rt.jobs.progress import Progress
from playground_rt.jobs.retention import Retention
from playground_rt.jobs.work import JobWork, ms
from playground_rt.pipeline import registry
from playground_rt.pipeline.ops.base import SessionProvider
from playground_rt.pipeline.results import ResultStore

log = logging.getLogger("playground_rt.jobs.manager")

FINISHED_KEPT = 2000


class JobManager:
    def __init__(
        self,
        settings: Settings,
        store: ResultStore,
        models: SessionProvider,
        retention: Retention,
        pipelines: registry.Pipelines = registry.PIPELINES,
    ) -> None:
        self.settings = settings
        self.pipelines = pipelines
        self.store = store
        self.retention = retention
        self.models = models
        self.intake = Intake(settings, models, pipelines)
        self.limits = self.intake.limits
        self.listeners: list[Listener] = []
        self.submissions: list[Callable[[Submission], None]] = []
        """Told of every submission (REST or WebSocket), after it was accepted."""
        self.active: dict[str, Job] = {}
        self.finished: OrderedDict[str, Job] = OrderedDict()
        self.work = JobWork(settings, store, retention, models, self.limits)
        self.masks = self.work.masks
        self.outlines = self.work.outlines
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = False
        self.executor: Executor[Job, Path] = Executor(
            workers=settings.worker_count,
            queue_size=settings.queue_size,
            timeout_s=settings.job_timeout_s,
            run=self.work.run,
            settle=self._settle,
            started=self._started,
            kind=lambda job: job.prepared.kind,
            on_timeout=lambda job: job.stop.set(),
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        progress = Progress(self._loop, self._emit)
        self.work.connect(self._loop, progress=progress.report, outlined=progress.outlined)
        self.executor.start()

    async def stop(self, grace_s: float) -> None:
        """Stop for shutdown: queued jobs are cancelled at once, running ones get ``grace_s``
        to finish and are then cancelled; every job ends with a terminal frame. Threads
        still inside an op are not waited for (they are daemon threads)."""
        if self._stopped:
            return
        self._stopped = True
        for job in self.executor.close():
            self._finish(job, JobState.CANCELLED, detail="server shutting down")
        running = [job for job in self.active.values() if not job.terminal]
        if running:
            await asyncio.wait(
                [asyncio.ensure_future(j.done.wait()) for j in running], timeout=grace_s
            )
        for job in list(self.active.values()):
            self._cancel(job, "server shutting down")
        await self.executor.join(timeout_s=0)

    # --- requests --------------------------------------------------------------------------

    async def prepare(self, request: schemas.PipelineRequest) -> Prepared:
        """Validate a request without running it (``PlaygroundError`` on bad input)."""
        return await self.intake.prepare(request)

    async def submit(
        self, prepared: Prepared, mode: Mode, task_id: str | None, client: str | None = None
    ) -> Submission:
        """Run ``prepared`` (or join, answer from the cache, leave it to the browser).

        ``client`` names who queues it (the remote address): one client holds at most
        ``client_queue_share`` places in the queue, so one busy tab or script cannot shut
        everyone else out. REST and WebSocket submissions both come here, and so every
        one reaches the ``submissions`` observers (the ``coalesced`` metric).
        """
        submission = await self._accept(prepared, mode, task_id, client)
        submission.server_reasons = routing.server_reasons(prepared, mode)
        for observe in self.submissions:
            observe(submission)
        return submission

    async def _accept(
        self, prepared: Prepared, mode: Mode, task_id: str | None, client: str | None
    ) -> Submission:
        interest = task_id or f"anon:{uuid.uuid4().hex}"
        notes = list(prepared.notes)
        route_client, backend = routing.route(prepared, mode, notes)
        if task_id is not None:
            self._supersede(task_id, prepared.job_id)
        if (job := self.active.get(prepared.job_id)) is not None:
            job.interests.add(interest)
            notes.append(routing.JOINED_NOTE)
            self._announce_position(job)
            return Submission(job, "accepted", notes, joined=True)
        if (hit := self._from_cache(prepared, backend, interest)) is not None:
            return Submission(hit, "completed", notes)
        job = Job(prepared, backend, interests={interest}, client=client)
        if route_client:
            notes.append(routing.CLIENT_NOTE)
            return Submission(job, "accepted", notes)
        self._check_share(client)
        position = self.executor.submit(job)  # QueueFull before anything is decoded
        self.active[job.id] = job
        self._emit(
            job,
            schemas.Queued(job_id=job.id, position=position, eta_ms=self.executor.eta_ms(position)),
        )
        return Submission(job, "accepted", notes)

    @property
    def accepting(self) -> bool:
        """Whether jobs can be submitted now (``/readyz``)."""
        return self.executor.accepting

    def _check_share(self, client: str | None) -> None:
        """``client_queue_share``: ``ClientQueueFull`` for a client with that many jobs
        waiting (on a web node: waiting in the cluster, queued through this node)."""
        share = self.settings.client_queue_share
        if client is None or share == 0:
            return
        mine = self._waiting(client)
        if len(mine) >= share:
            seconds = self._retry_after(mine)
            raise errors.ClientQueueFull(
                f"you have {len(mine)} jobs waiting (client_queue_share={share}); "
                f"retry in {seconds} s",
                retry_after=seconds,
            )

    def _waiting(self, client: str) -> list[Job]:
        return [job for job in self.executor.queued() if job.client == client]

    def _retry_after(self, jobs: list[Job]) -> int:
        return self.executor.retry_after(jobs)

    async def wait(self, job: Job, timeout_s: float) -> bool:
        """Wait until ``job`` is terminal or ``timeout_s`` passed; True when terminal."""
        try:
            await asyncio.wait_for(asyncio.shield(job.done.wait()), timeout_s)
        except TimeoutError:
            return False
        return True

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job outright, for every follower (the API asks for the token first)."""
        job = self.active.get(job_id)
        if job is None:
            return self.get(job_id)
        self._cancel(job, "cancelled outright")
        return job

    async def withdraw(self, job_id: str, task_id: str) -> Job:
        """Withdraw ``task_id``'s interest in a job: its followers get ``cancelled``; the job
        goes on while another interest is left. ``UnknownJob`` when the task does not follow
        a job in flight (a finished job is returned as it is)."""
        job = self.active.get(job_id)
        if job is None:
            return self.get(job_id)
        if not self._withdraw(job, task_id, "cancelled by the client"):
            raise errors.UnknownJob(f"task {task_id!r} does not follow job {job_id!r}")
        return job

    async def withdraw_task(self, task_id: str) -> list[Job]:
        """Withdraw ``task_id`` from every job in flight it follows; those jobs."""
        jobs = [job for job in self.active.values() if task_id in job.interests]
        for job in jobs:
            self._withdraw(job, task_id, "cancelled by the client")
        return jobs

    def follows(self, job_id: str, task_ids: set[str]) -> set[str]:
        """Which of ``task_ids`` follow the job in flight ``job_id``."""
        job = self.active.get(job_id)
        return task_ids & job.interests if job is not None else set()

    def get(self, job_id: str) -> Job:
        job = self.active.get(job_id) or self.finished.get(job_id)
        if job is not None:
            return job
        raise errors.UnknownJob(f"no job {job_id!r} (finished jobs are kept for a while only)")

    async def view_of(self, job_id: str) -> schemas.JobView:
        """The job's view: from memory, else from its result on disk (``views``)."""
        try:
            return self.view(self.get(job_id))
        except errors.UnknownJob:
            found = views.from_disk(job_id, self.settings, self.store, self.pipelines)
            if found is None:
                raise
            return found

    def view(self, job: Job) -> schemas.JobView:
        return views.of_job(job, self.settings, self._place(job), self._threads(job))

    def _place(self, job: Job) -> tuple[int, int] | None:
        """``(position, eta_ms)`` of a queued job."""
        position = self.executor.position(job) if job.state is JobState.QUEUED else None
        return None if position is None else (position, self.executor.eta_ms(position))

    def _threads(self, job: Job) -> int | None:
        return views.model_threads(job, self.settings)

    def result_url(self, path: Path) -> str:
        return views.result_url(self.settings, path)

    # --- on the loop -----------------------------------------------------------------------

    def _started(self, job: Job) -> None:
        job.move(JobState.RUNNING)
        alone = self.executor.stats.running == 1 and not self.executor.queued()
        job.wide = alone and self.settings.wide_threads > 0
        job.durations["queue"] = ms(time.perf_counter() - job.created)
        for queued in self.executor.queued():
            self._announce_position(queued)

    def _settle(self, job: Job, outcome: Path | BaseException) -> None:
        if job.terminal:  # cancelled while its thread ran: the outcome is nobody's now
            return
        if isinstance(outcome, Path):
            job.result_path = outcome
            self._finish(job, JobState.COMPLETED)
        elif isinstance(outcome, errors.JobCancelled):
            self._finish(job, JobState.CANCELLED, detail=outcome.detail)
        elif isinstance(outcome, errors.PlaygroundError):
            self._finish(job, JobState.FAILED, detail=outcome.detail, code=outcome.code)
        else:
            log.error("job %s failed", job.id, exc_info=outcome)
            detail = f"{type(outcome).__name__}: {outcome}"
            self._finish(job, JobState.FAILED, detail=detail, code=errors.OpFailed.code)

    def _supersede(self, task_id: str, keep: str) -> None:
        """A task's newer request replaces its older ones, queued or running: while a
        slider is dragged only the newest value matters (Gradio's ``always_last``). A job
        another task still wants goes on for that task."""
        for job in list(self.active.values()):
            if job.id != keep and task_id in job.interests:
                self._withdraw(job, task_id, f"superseded by a newer request of task {task_id}")

    def _withdraw(self, job: Job, task_id: str, detail: str) -> bool:
        """Take ``task_id``'s interest out of ``job``; False when it had none. The last
        interest cancels the job itself, with ``task_id`` still among its followers."""
        if task_id not in job.interests:
            return False
        if job.interests == {task_id}:
            self._cancel(job, detail)
        else:
            job.interests.discard(task_id)
            if not task_id.startswith("anon:"):
                frame = schemas.Cancelled(job_id=job.id, detail=detail)
                self._emit_event(JobEvent(frame, frozenset({task_id}), withdrawn=True))
        return True

    def _cancel(self, job: Job, detail: str) -> None:
        """Terminal at once; a running job's thread stops at its next check, its slot
        stays taken until then (the executor waits for it)."""
        if job.state is JobState.QUEUED:
            self.executor.remove(job)
        elif job.state is JobState.RUNNING:
            job.stop.set()
        else:
            return
        self._finish(job, JobState.CANCELLED, detail=detail)

    def _from_cache(self, prepared: Prepared, backend: str, interest: str) -> Job | None:
        """A whole result on disk answers at once (a use); pinned from before the lookup
        until its ``completed`` frame is out, so retention cannot remove it in between."""
        pipeline_id, job_id = prepared.pipeline_id, prepared.job_id
        path = self.store.path(pipeline_id, job_id)
        with self.retention.pinned(path):
            if self.store.lookup(pipeline_id, job_id) is None:
                return None
            self.retention.used(path)
            return self._cache_hit(prepared, backend, interest, path)

    def _cache_hit(self, prepared: Prepared, backend: str, interest: str, path: Path) -> Job:
        job = Job(without_image(prepared), backend, interests={interest}, result_path=path)
        job.cache_hit = True
        job.state = JobState.COMPLETED
        self._retire(job)
        self._emit(job, self._completed_frame(job))
        return job

    def _finish(
        self, job: Job, state: JobState, detail: str | None = None, code: str | None = None
    ) -> None:
        job.move(state)
        job.detail, job.code = detail, code
        job.durations["total"] = ms(time.perf_counter() - job.created)
        job.prepared = without_image(job.prepared)  # kept jobs must not keep request bytes
        Progress.stop(job)
        if self.active.get(job.id) is job:  # an identical newer job may have taken the id
            del self.active[job.id]
        self._retire(job)
        if state is JobState.COMPLETED:
            self._emit(job, self._completed_frame(job))
        elif state is JobState.FAILED:
            self._emit(job, schemas.Failed(job_id=job.id, detail=detail or "failed", code=code))
        else:
            self._emit(job, schemas.Cancelled(job_id=job.id, detail=detail))
        self.work.release(job)
        job.done.set()

    def _completed_frame(self, job: Job) -> schemas.Completed:
        assert job.result_path is not None
        return schemas.Completed(
            job_id=job.id,
            result_url=self.result_url(job.result_path),
            cache_hit=job.cache_hit,
            durations=job.durations,
        )

    def _retire(self, job: Job) -> None:
        self.finished[job.id] = job
        self.finished.move_to_end(job.id)
        while len(self.finished) > FINISHED_KEPT:
            self.finished.popitem(last=False)

    def _announce_position(self, job: Job) -> None:
        position = self.executor.position(job)
        if position is not None:
            self._emit(
                job,
                schemas.Queued(
                    job_id=job.id, position=position, eta_ms=self.executor.eta_ms(position)
                ),
            )

    def _emit(self, job: Job, frame: schemas.JobFrame) -> None:
        self._emit_event(JobEvent(frame, job.task_ids))

    def _emit_event(self, event: JobEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("job listener failed")
