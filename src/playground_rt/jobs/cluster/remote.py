"""The web node (``PLAYGROUND_EXECUTE=remote``): jobs go to the workers through Redis.

:class:`RemoteJobs` is the :class:`~playground_rt.jobs.manager.JobManager` of a web node. Requests
are validated and keyed as always; then, instead of the local executor, the ``submit``
script queues the job on the ``jobs`` stream, or joins the run already in flight anywhere in
the cluster (single-flight across nodes), with the queue's depth, the supersede of the
task's older job and the ``queued`` frame in the same atomic step. Withdrawals and cancels
are scripts too, so they reach a job whichever node queued it, and the worker that runs it.

Frames: every frame of a remote job goes to the cluster's ``history`` stream, and every web
node delivers what it reads there (:class:`~.feed.Feed`) to its own sockets; nothing goes
to the hub directly. A node keeps a *proxy* :class:`~playground_rt.jobs.job.Job` per run it
was asked for, moved along by the frames it reads (``proxies``): ``/fallback`` waits on it
and ``GET /api/jobs/{id}`` shows it (a job this node never saw is read from Redis:
``records``).

Failures: while Redis is away, submissions fail with 503 (``NotReady``); the node keeps its
sockets, and the feed goes on from where it stopped once Redis is back. If Redis lost its
data (restarted without persistence), the node queues its runs in flight again from the
bytes its proxies still hold (content-addressed: a result already written is a cache hit),
so nothing acknowledged is lost while the node that took it lives. A web node that stops
leaves its jobs to the cluster: they run, and their frames reach the nodes the clients
reconnect to.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.jobs import routing
from playground_rt.jobs.cluster import records, wire
from playground_rt.jobs.cluster.feed import Feed
from playground_rt.jobs.cluster.figures import ClusterModels, Figures
from playground_rt.jobs.cluster.link import LOST, Link, retrying, text
from playground_rt.jobs.cluster.proxies import Proxies
from playground_rt.jobs.executor import default_duration_s
from playground_rt.jobs.intake import Intake
from playground_rt.jobs.job import (
    Job,
    JobEvent,
    JobState,
    Mode,
    Prepared,
    Submission,
)
from playground_rt.jobs.manager import JobManager
from playground_rt.jobs.retention import Retention
from playground_rt.pipeline.results import ResultStore
from playground_rt.pipeline.sessions import ModelRegistry

log = logging.getLogger("playground_rt.jobs.cluster")

ACTIVE_TTL_S = 86_400
"""A job record in flight expires after a day (a safety net: the job ends long before)."""
ANNOUNCE_DELAY_S = 0.1
"""A job started somewhere: this node re-announces its queued jobs' positions this soon."""
WITHDRAWN_WAIT_S = 1.0


class RemoteJobs(JobManager):
    def __init__(
        self, settings: Settings, store: ResultStore, models: ModelRegistry, retention: Retention
    ) -> None:
        super().__init__(settings, store, models, retention)
        self.name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.link = Link(settings)
        self.figures = Figures(self.link, self.executor.stats)
        self.intake = Intake(settings, ClusterModels(lambda: self.figures.workers))
        self.limits = self.intake.limits
        self.sinks: list[Callable[[wire.HistoryEntry], None]] = []
        """Who gets every history entry (the hub: ``Hub.deliver``)."""
        self.lost: list[Callable[[str], None]] = []
        """Told when history entries may be missing (the hub sends its sockets a ``gap``)."""
        self.feed = Feed(self.link, self._on_history, self._on_lost, self._on_state)
        self.proxies = Proxies(
            self.store, self.active, self._retire, functools.partial(JobManager._emit_event, self)
        )
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._announce: asyncio.TimerHandle | None = None
        self._outbox: asyncio.Queue[tuple[str, tuple[str | bytes | int | float, ...]]] = (
            asyncio.Queue()
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._tasks = [
            asyncio.create_task(self.feed.run(self._stop), name="cluster-feed"),
            asyncio.create_task(self.figures.run(self._stop), name="cluster-figures"),
            asyncio.create_task(self._send(), name="cluster-send"),
        ]

    async def stop(self, grace_s: float) -> None:
        """Leave the jobs to the cluster (they run on; their frames reach the nodes the
        clients reconnect to); wake this node's waiters; close the connection."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(grace_s, 2.0)):
                await self._outbox.join()
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.link.close()

    @property
    def accepting(self) -> bool:
        return self.feed.connected.is_set() and not self._stopped

    async def wait(self, job: Job, timeout_s: float) -> bool:
        """As :meth:`JobManager.wait`, but also returns (False) when this node stops."""
        stopping = asyncio.ensure_future(self._stop.wait())
        done = asyncio.ensure_future(job.done.wait())
        try:
            await asyncio.wait([stopping, done], timeout=timeout_s, return_when="FIRST_COMPLETED")
        finally:
            stopping.cancel()
            done.cancel()
        return job.terminal

    # --- requests --------------------------------------------------------------------------

    async def _accept(
        self, prepared: Prepared, mode: Mode, task_id: str | None, client: str | None
    ) -> Submission:
        """As :meth:`JobManager._accept`, across the cluster: a run in flight on any node is
        joined, the queue's depth is the cluster's, a task's older job anywhere is
        superseded."""
        interest = task_id or f"anon:{uuid.uuid4().hex}"
        notes = list(prepared.notes)
        route_client, backend = routing.route(prepared, mode, notes)
        path = self.store.lookup(prepared.pipeline_id, prepared.job_id)
        if path is not None:
            if task_id is not None:
                await self._script("supersede", task_id, prepared.job_id)
            hit = self._cache_hit(prepared, backend, interest, path)
            return Submission(hit, "completed", notes)
        if not route_client:
            self._check_share(client)
        reply = await self._queue(prepared, interest, task_id, join_only=route_client)
        status = text(reply[0])
        if status == "completed":  # it ended between the lookup and the script
            if (path := self.store.lookup(prepared.pipeline_id, prepared.job_id)) is not None:
                hit = self._cache_hit(prepared, backend, interest, path)
                return Submission(hit, "completed", notes)
            reply = await self._queue(prepared, interest, task_id, force=True)
            status = text(reply[0])
        if status == "full":
            raise self._queue_full(int(reply[1]))
        if status == "absent":  # the page's own work, nothing in flight to join
            notes.append(routing.CLIENT_NOTE)
            return Submission(
                Job(prepared, backend, interests={interest}, client=client), "accepted", notes
            )
        return self._proxy(prepared, backend, interest, client, reply, notes)

    async def _queue(
        self,
        prepared: Prepared,
        interest: str,
        task_id: str | None,
        *,
        join_only: bool = False,
        force: bool = False,
    ) -> list[Any]:
        """The ``submit`` script, with what is read meanwhile about this job kept aside (a
        fast run may end before the script's answer is back)."""
        body = wire.QueuedJob(
            job_id=prepared.job_id,
            pipeline_id=prepared.pipeline_id,
            params=prepared.plan.canonical,
            image=prepared.source.data,
            checkpoint=self._checkpoint_arg(prepared.checkpoint),
            origin=self.name,
        )
        kind = prepared.kind
        with self.proxies.listening(prepared.job_id) as buffer:
            reply: list[Any] = await self._script(
                "submit",
                prepared.job_id,
                interest,
                task_id or "",
                wire.encode_body(body),
                self.settings.queue_size,
                kind,
                int(default_duration_s(kind) * 1000),
                max(1, self.executor.stats.workers),
                self.name,
                ACTIVE_TTL_S * 1000,
                "1" if force else "0",
                "1" if join_only else "0",
            )
        reply.append(buffer)
        return reply

    def _proxy(
        self,
        prepared: Prepared,
        backend: str,
        interest: str,
        client: str | None,
        reply: list[Any],
        notes: list[str],
    ) -> Submission:
        """The run's proxy on this node, caught up with what was read while the script ran."""
        status, run, position, state, buffer = text(reply[0]), text(reply[1]), *reply[2:]
        job = self.proxies.get(run)
        if job is None:
            job = Job(prepared, backend, client=client)
            self.proxies.track(job, run)
            if text(state) == "running":
                job.move(JobState.RUNNING)
        job.interests.add(interest)
        if status == "queued":
            self.proxies.mine.add(run)
        if int(position) >= 0:
            place = (int(position), self.figures.eta_ms(int(position), prepared.kind))
            self.proxies.positions[run] = place
        for entry in buffer:
            if entry.run == run:
                self.proxies.apply(job, run, entry)
        if status == "joined":
            notes.append(routing.JOINED_NOTE)
        return Submission(job, "accepted", notes, joined=status == "joined")

    def _waiting(self, client: str) -> list[Job]:
        """A client's requests reach one node at a time: the share counts this node's."""
        return self.proxies.waiting(client)

    def _retry_after(self, jobs: list[Job]) -> int:
        return self.figures.seconds_for(len(jobs))

    def _queue_full(self, depth: int) -> errors.QueueFull:
        seconds = self.figures.seconds_for(depth)
        return errors.QueueFull.waiting(depth, seconds, " in the cluster")

    def _checkpoint_arg(self, checkpoint: Path | None) -> str | None:
        if checkpoint is None:
            return None
        return checkpoint.relative_to(self.settings.outputs_root.resolve()).as_posix()

    # --- withdrawals and cancels -----------------------------------------------------------

    async def cancel(self, job_id: str) -> Job:
        ended = await self._script("cancel", job_id, "cancelled outright")
        return await self._settled(job_id, ended=bool(ended))

    async def withdraw(self, job_id: str, task_id: str) -> Job:
        status = await self.withdraw_status(job_id, task_id)
        if status == "unknown":
            return self.get(job_id)  # UnknownJob unless this node knew it
        if status == "not_following":
            raise errors.UnknownJob(f"task {task_id!r} does not follow job {job_id!r}")
        return await self._settled(job_id, ended=status == "cancelled")

    async def withdraw_status(self, job_id: str, task_id: str) -> str:
        """Withdraw ``task_id`` from the job wherever it runs: ``withdrawn``, ``cancelled``
        (it was the last interest), ``not_following``, ``finished`` or ``unknown``."""
        return text(await self._script("withdraw", job_id, task_id, "cancelled by the client"))

    async def withdraw_task(self, task_id: str) -> list[Job]:
        status, job_id = await self._script("withdraw_task", task_id, "cancelled by the client")
        if text(status) not in ("withdrawn", "cancelled"):
            return []
        return [await self._settled(text(job_id), ended=text(status) == "cancelled")]

    async def _settled(self, job_id: str, ended: bool) -> Job:
        """The job after a withdrawal: its proxy (once the frame that ended it was read, when
        the withdrawal ended it: it is on its way), else what Redis says."""
        job = self.active.get(job_id)
        if job is None:
            job = self.finished.get(job_id) or await records.job(self.link, self.store, job_id)
        elif ended:
            await self.wait(job, WITHDRAWN_WAIT_S)
        return job

    # --- views -----------------------------------------------------------------------------

    def _place(self, job: Job) -> tuple[int, int] | None:
        return self.proxies.place(job)

    def _threads(self, job: Job) -> int | None:
        return None  # the worker's business

    async def view_of(self, job_id: str) -> schemas.JobView:
        """Known here, else the cluster's record (``records``), else the result on disk."""
        with contextlib.suppress(errors.UnknownJob):
            return self.view(self.get(job_id))
        with contextlib.suppress(errors.UnknownJob):
            view = self.view(await records.job(self.link, self.store, job_id))
            if view.state == "queued":  # its place in the cluster's queue
                found = await records.queue_rank(self.link, job_id, view.pipeline_id)
                if found is not None:
                    view.position, view.eta_ms = found[0], self.figures.eta_ms(*found)
            return view
        return await super().view_of(job_id)

    # --- the cluster's frames --------------------------------------------------------------

    def _on_history(self, entry: wire.HistoryEntry) -> None:
        for sink in self.sinks:
            sink(entry)
        frame = entry.frame
        if isinstance(frame, schemas.Progress) and frame.step == 0:
            self._schedule_announce()
        self.proxies.follow(entry)

    def _emit_event(self, event: JobEvent) -> None:
        """Frames made here (a cache hit's ``completed``) go to the history like all others."""
        super()._emit_event(event)
        tasks = wire.encode_task_ids(event.task_ids)
        flag = "1" if event.withdrawn else "0"
        self._outbox.put_nowait(("notify", (wire.encode_frame(event.frame), tasks, flag)))

    def _schedule_announce(self) -> None:
        if self._announce is None and self.proxies.mine and self._loop is not None:
            self._announce = self._loop.call_later(ANNOUNCE_DELAY_S, self._announce_queued)

    def _announce_queued(self) -> None:
        """A job started: tell the followers of this node's queued runs where they are."""
        self._announce = None
        for run in sorted(self.proxies.mine):
            job = self.proxies.get(run)
            if job is None or job.state is not JobState.QUEUED:
                continue
            last = self.proxies.positions.get(run, (-1, 0))[0]
            kind = job.prepared.kind
            default_ms = int(default_duration_s(kind) * 1000)
            threads = max(1, self.executor.stats.workers)
            self._outbox.put_nowait(("announce", (job.id, last, default_ms, threads, run)))

    def _on_state(self, connected: bool) -> None:
        if connected:
            log.info("cluster: connected to %s as web node %s", self.link.where, self.name)

    def _on_lost(self, detail: str) -> None:
        """Redis lost entries: tell the sockets, and queue this node's runs again."""
        for handler in self.lost:
            handler(detail)
        if self._loop is not None and not self._stopped:
            task = self._loop.create_task(self._requeue(), name="cluster-requeue")
            self._tasks.append(task)

    async def _requeue(self) -> None:
        """Queue again every run this node has in flight (Redis restarted empty)."""
        try:
            await self.proxies.requeue(self._queue_again, self._stop)
        except Exception:  # task boundary
            log.exception("cluster: queueing the jobs in flight again failed")

    def _queue_again(self, job: Job, interest: str) -> Awaitable[list[Any]]:
        task = None if interest.startswith("anon:") else interest
        return self._queue(job.prepared, interest, task, force=True)

    # --- background ------------------------------------------------------------------------

    async def _script(self, name: str, *args: str | bytes | int | float) -> Any:
        """Run a script now (a request waits for it): ``NotReady`` while Redis is away."""
        try:
            return await self.link.run(name, *args)
        except LOST as exc:
            raise errors.NotReady(
                f"the cluster's Redis is unreachable ({exc}); retry shortly"
            ) from None

    async def _send(self) -> None:
        """Frames and announcements made here, in order; retried while Redis is away."""
        while not self._stop.is_set():  # see link.pause
            name, args = await self._outbox.get()
            try:
                result = await retrying(
                    functools.partial(self.link.run, name, *args), f"cluster {name}", self._stop
                )
                if name == "announce" and result is not None and int(result) >= 0:
                    self._positioned(text(args[4]), int(result))
            except Exception:
                log.exception("cluster %s failed", name)
            finally:
                self._outbox.task_done()

    def _positioned(self, run: str, position: int) -> None:
        job = self.proxies.get(run)
        if job is not None:
            eta_ms = self.figures.eta_ms(position, job.prepared.kind)
            self.proxies.positions[run] = (position, eta_ms)
