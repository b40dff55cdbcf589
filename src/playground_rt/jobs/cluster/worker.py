"""``playground-rt worker``: runs the cluster's server jobs, taken from a Redis Stream.

A worker is the one-process server without its web half: the same
:class:`~playground_rt.jobs.manager.JobManager` (executor threads, time budget, progress coalescing,
the result cache, ``registry.apply``, ``images.decode``/``encode_png``, ``ResultStore``),
fed from the ``jobs`` stream's consumer group instead of HTTP, its events turned into the
cluster's scripts (:mod:`.scripts`, by :mod:`.updates`) instead of frames to sockets. This
module takes the entries and starts and stops the worker; the claims, cancels and heartbeat
of the jobs in hand are :mod:`.upkeep`'s.

Delivery is at-least-once, and a job's end is exactly-once:

* It reads an entry only when a thread is free (``XREADGROUP``), so entries wait in the
  stream, not in a worker's memory, and any worker may take the next one.
* ``start`` moves the job to ``running`` under this worker's name (or skips an entry whose
  job was cancelled, ended, or queued again meanwhile).
* While it runs, the worker renews its claim every third of ``claim_idle_s`` (``XCLAIM
  JUSTID`` of its own entries) and reads the job's state every ``WATCH_S``: a job cancelled
  in the cluster (or ended by another worker) is stopped between ops.
* ``finish`` ends the job (its terminal frame, once: a job that already ended is only
  acknowledged), then ``XACK``/``XDEL``. A result is written (atomically, content-addressed)
  before its job ends, so running a job twice only costs time.
* A worker killed mid-job renews nothing: after ``claim_idle_s`` another worker's
  ``XAUTOCLAIM`` takes the entry over and runs it again. An entry handed out more than
  ``max_deliveries`` times goes to the ``dead`` stream and its job fails with the reason.
* On SIGTERM it stops taking entries, gives running jobs ``shutdown_grace_s``, and hands the
  rest back (claimable at once by the other workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from typing import Any

from redis.exceptions import ResponseError

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.jobs.cluster import gpu, wire
from playground_rt.jobs.cluster.entries import Entries
from playground_rt.jobs.cluster.gpu import GpuRequired
from playground_rt.jobs.cluster.link import BACKOFF_S, BLOCK_MS, LOST, Link, text
from playground_rt.jobs.cluster.updates import Hand, Updates
from playground_rt.jobs.cluster.upkeep import Upkeep
from playground_rt.jobs.manager import JobManager
from playground_rt.jobs.retention import Retention
from playground_rt.pipeline.results import ResultStore
from playground_rt.pipeline.sessions import ModelRegistry

log = logging.getLogger("playground_rt.worker")

FREE_POLL_S = 0.1
"""How often a worker with every thread taken looks again (a cancelled op may have ended)."""


class Worker:
    def __init__(self, settings: Settings, name: str | None = None) -> None:
        self.settings = settings
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.store = ResultStore(settings.results_root)
        self.models = ModelRegistry(
            settings.model_home,
            settings.outputs_root,
            settings.intra_op_threads,
            wide_threads=settings.wide_threads,
        )
        # Workers write into the shared results folder: their writes count and trim too.
        self.retention = Retention(
            settings.results_root, settings.results_max_bytes, settings.results_max_age_s
        )
        self.jobs = JobManager(settings, self.store, self.models, self.retention)
        self.link = Link(settings)
        self.entries = Entries(settings)
        self.threads = settings.worker_count
        self.hands: dict[str, Hand] = {}
        self.started_ms = int(time.time() * 1000)
        self._stop = asyncio.Event()
        self._free = asyncio.Event()
        self.updates = Updates(settings, self.link, self.name, self.hands, self._free)
        self.jobs.listeners.append(self.updates.on_event)
        self.upkeep = Upkeep(
            self.link,
            self.name,
            settings.claim_idle_s,
            self.hands,
            self.jobs,
            self.status,
            self._stop,
        )

    # --- lifecycle -------------------------------------------------------------------------

    def prepare_models(self) -> None:
        """Pull and load the preload models before anything is taken from the stream
        (``GpuRequired`` when asked for and absent)."""
        gpu.load_models(self.settings, self.models)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully."""
        await asyncio.to_thread(self.prepare_models)
        await asyncio.to_thread(self.retention.load)
        self.jobs.start()
        take = asyncio.create_task(self._take_loop(), name="worker-take")
        tasks = [
            asyncio.create_task(self.retention.keep(), name="worker-retention"),
            take,
            *self.upkeep.start(),
            asyncio.create_task(self.updates.send(), name="worker-send"),
        ]
        log.info(
            "worker %s ready: %d thread(s), models %s on %s, broker %s",
            self.name,
            self.threads,
            ", ".join(self.models.available()) or "-",
            ", ".join(self._providers()) or "-",
            self.link.where,
        )
        await stop.wait()
        await self._shutdown(tasks, take)

    async def _shutdown(self, tasks: list[asyncio.Task[None]], take: asyncio.Task[None]) -> None:
        log.info("worker %s stopping: %d job(s) in hand", self.name, len(self.hands))
        self._stop.set()
        for hand in self.hands.values():
            hand.after_cancel = "release"
        # The grace starts now, not when the take loop's blocking read ends (up to BLOCK_MS
        # later): an entry it takes meanwhile is refused (NotReady) and handed back.
        stopping = asyncio.ensure_future(self.jobs.stop(self.settings.shutdown_grace_s))
        await asyncio.wait([take], timeout=BLOCK_MS / 1000 + 1)
        await stopping
        await self.updates.drain()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(*LOST):
            await self.link.redis.delete(wire.worker_key(self.name))
            await self.link.redis.srem(wire.WORKERS, self.name)
        await self.link.close()

    # --- taking entries --------------------------------------------------------------------

    async def _take_loop(self) -> None:
        backoff = BACKOFF_S[0]
        last_reclaim = 0.0
        reclaim_s = max(0.2, self.settings.claim_idle_s / 2)
        while not self._stop.is_set():
            free = self.threads - self._busy()
            if free <= 0:
                self._free.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FREE_POLL_S):
                        await self._free.wait()
                continue
            try:
                entries: list[tuple[str, dict[bytes, bytes], int]] = []
                if time.monotonic() - last_reclaim >= reclaim_s:
                    last_reclaim = time.monotonic()
                    entries = await self._reclaim(free)
                if not entries:
                    entries = await self._read(free)
                for entry_id, fields, deliveries in entries:
                    await self._take(entry_id, fields, deliveries)
                backoff = BACKOFF_S[0]
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    await self.link.ensure_group()  # Redis came back empty
                    continue
                log.exception("worker %s: reading the stream failed", self.name)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
            except LOST as exc:
                log.warning("worker %s: Redis unreachable (%s); retrying", self.name, exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])

    def _busy(self) -> int:
        """Threads taken: by the jobs in hand, and by cancelled jobs whose op has not reached
        its next check yet (an entry read now would wait behind them, unseen by the other
        workers)."""
        executor = self.jobs.executor
        return max(len(self.hands), executor.stats.running + executor.stats.queue_depth)

    async def _read(self, count: int) -> list[tuple[str, dict[bytes, bytes], int]]:
        reply: Any = await self.link.redis.xreadgroup(
            wire.GROUP, self.name, {wire.JOBS: ">"}, count=count, block=BLOCK_MS
        )
        return [(text(i), fields, 1) for _stream, entries in reply or () for i, fields in entries]

    async def _reclaim(self, count: int) -> list[tuple[str, dict[bytes, bytes], int]]:
        """Entries whose worker stopped renewing its claim (it died), with their delivery
        counts (``XAUTOCLAIM`` counted this one)."""
        redis = self.link.redis
        idle_ms = int(self.settings.claim_idle_s * 1000)
        reply: Any = await redis.xautoclaim(
            wire.JOBS, wire.GROUP, self.name, idle_ms, start_id="0-0", count=count
        )
        found = []
        for entry_id, fields in reply[1]:
            if not fields:
                continue
            pending: Any = await redis.xpending_range(
                wire.JOBS, wire.GROUP, min=entry_id, max=entry_id, count=1
            )
            deliveries = int(pending[0]["times_delivered"]) if pending else 1
            log.warning(
                "worker %s took over entry %s (delivery %d)", self.name, text(entry_id), deliveries
            )
            found.append((text(entry_id), fields, deliveries))
        return found

    async def _take(self, entry: str, fields: dict[bytes, bytes], deliveries: int) -> None:
        job_id = text(fields.get(b"job", b""))
        if deliveries > self.settings.max_deliveries:
            reason = (
                f"given up after {deliveries - 1} attempts: the worker running it stopped "
                "each time (killed, crashed or out of memory)"
            )
            log.error("job %s: %s; entry %s goes to %s", job_id, reason, entry, wire.DEAD)
            await self.link.run(
                "dead", job_id, entry, deliveries, reason, self.name, wire.DEAD_KEPT
            )
            return
        held = self.hands.get(job_id)
        if held is not None and held.entry == entry:
            return  # its own entry, idle while Redis was away: still running here
        if text(await self.link.run("start", job_id, self.name, entry)) != "run":
            await self.link.run("ack", entry)
            return
        try:  # off the loop: hashing, and the probe (Pillow may inflate text chunks)
            prepared = await asyncio.to_thread(self.entries.prepared, fields.get(b"body", b""))
        except errors.PlaygroundError as exc:
            await self.updates.fail(job_id, entry, exc)
            return
        if held is not None:  # an older run of the same job is still winding down here
            held.stale.append(held.entry)
            held.entry = entry
        else:
            enqueued = wire.stream_id(entry)[0]
            self.hands[job_id] = Hand(job_id, entry, prepared.kind, enqueued)
        try:
            await self.jobs.submit(prepared, "fallback", None)
        except errors.PlaygroundError as exc:  # stopping (NotReady): another worker runs it
            hand = self.hands.pop(job_id, None)
            if hand is not None and isinstance(exc, errors.NotReady):
                self.updates.release(hand.entry, *hand.stale)
            elif hand is not None:
                await self.updates.fail(job_id, entry, exc)

    # --- telemetry -------------------------------------------------------------------------

    def status(self) -> schemas.WorkerStatus:
        """What this worker's heartbeat tells telemetry."""
        return schemas.WorkerStatus(
            name=self.name,
            host=socket.gethostname(),
            pid=os.getpid(),
            threads=self.threads,
            models=self.models.available(),
            providers=self._providers(),
            running=len(self.hands),
            done=self.updates.done,
            failed=self.updates.failed,
            started_ms=self.started_ms,
        )

    def _providers(self) -> list[str]:
        seen: list[str] = []
        for info in self.models.info():
            seen += [p for p in info.providers if p not in seen]
        return seen


def main(settings: Settings, name: str | None) -> int:
    """``playground-rt worker``: 0 after a graceful stop, 2 when it refuses to start."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await Worker(settings, name).run(stop)

    try:
        asyncio.run(serve())
    except GpuRequired as exc:
        log.error("%s", exc)
        return 2
    except errors.PlaygroundError as exc:  # a preload model that cannot be pulled or loaded
        log.error("worker cannot start: %s", exc.detail)
        return 2
    return 0
