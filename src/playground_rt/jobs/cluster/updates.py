"""A worker's jobs in hand, and their progress and ends told to the cluster.

The job manager tells its listeners what happens to a job, on the event loop and without
waiting; :class:`Updates` turns those events into the cluster's scripts (:mod:`.scripts`)
and sends them from one outbox, in order, so a job's progress never lands after its end and
a listener never waits on Redis. A job's end is retried until Redis takes it; progress is
dropped while Redis is away. The durations of a completed job are rewritten here: its
queue time is the cluster's (from the entry's id), not the worker's own executor's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import msgspec

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.link import LOST, Link, retrying
from playground_rt.jobs.executor import EWMA_WEIGHT
from playground_rt.jobs.job import JobEvent

log = logging.getLogger("playground_rt.worker")

SEND_BATCH = 64
DRAIN_S = 5.0
"""How long a stopping worker waits for Redis to take the updates still in its outbox."""


AfterCancel = Literal["ack", "release", "leave"]


@dataclass
class Hand:
    """A job this worker holds: its run's entry, and what to do if it ends cancelled."""

    job_id: str
    entry: str
    kind: str
    enqueued_ms: int
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))
    stale: list[str] = field(default_factory=list)
    """Entries of older runs of the same job it also holds (acknowledged with this one)."""
    after_cancel: AfterCancel = "release"
    """``ack``: it ended in the cluster; ``leave``: another worker holds it now; ``release``
    (shutdown, or anything unforeseen): hand it back for another worker."""


Op = tuple[str, tuple[str | bytes | int | float, ...]]


class Updates:
    """The events of the jobs in ``hands`` → the cluster's scripts, and the counts of the
    jobs this worker ended (its heartbeat reports them). A job leaves ``hands`` at its end,
    and ``free`` is set: a thread may be free for the next entry."""

    def __init__(
        self,
        settings: Settings,
        link: Link,
        name: str,
        hands: dict[str, Hand],
        free: asyncio.Event,
    ) -> None:
        self.settings = settings
        self.link = link
        self.name = name
        self.hands = hands
        self.free = free
        self.done = 0
        self.failed = 0
        self._abandon = asyncio.Event()
        self._outbox: asyncio.Queue[Op] = asyncio.Queue()

    def on_event(self, event: JobEvent) -> None:
        frame = event.frame
        hand = self.hands.get(frame.job_id)
        if hand is None or isinstance(frame, schemas.Queued):
            return
        if isinstance(frame, schemas.Progress):
            args = (hand.job_id, self.name, hand.entry, wire.encode_frame(frame))
            self.queue(("progress", args))
            return
        del self.hands[hand.job_id]
        self.free.set()
        if hand.stale:
            self.queue(("ack", tuple(hand.stale)))
        if isinstance(frame, schemas.Completed | schemas.Failed):
            self._finish(hand, frame)
        elif hand.after_cancel == "ack":
            self.queue(("ack", (hand.entry,)))
        elif hand.after_cancel == "release":
            self.release(hand.entry)

    def _finish(self, hand: Hand, frame: schemas.Completed | schemas.Failed) -> None:
        run_ms: float | str = ""
        if isinstance(frame, schemas.Completed):
            self.done += 1
            durations = dict(frame.durations)
            local_queue = durations.pop("queue", 0.0)
            queue_ms = float(max(0, hand.started_ms - hand.enqueued_ms))
            if "total" in durations:
                run_ms = round(durations["total"] - local_queue, 3)
                durations["total"] = round(durations["total"] - local_queue + queue_ms, 3)
            durations["queue"] = queue_ms
            frame = msgspec.structs.replace(frame, durations=durations)
            state, detail = "completed", ""
        else:
            self.failed += 1
            state, detail = "failed", frame.detail
        args = (
            hand.job_id,
            hand.entry,
            state,
            wire.encode_frame(frame),
            detail,
            hand.kind,
            run_ms,
            EWMA_WEIGHT,
        )
        self.queue(("finish", args))

    async def fail(self, job_id: str, entry: str, error: errors.PlaygroundError) -> None:
        """End a job that never reached the job manager, at once (no event will tell)."""
        failed = schemas.Failed(job_id=job_id, detail=error.detail, code=error.code)
        frame = wire.encode_frame(failed)
        await self.link.run("finish", job_id, entry, "failed", frame, error.detail, "", "", 0)
        self.failed += 1

    def release(self, *entries: str) -> None:
        """Hand ``entries`` back, claimable at once by the other workers."""
        idle_ms = int(self.settings.claim_idle_s * 1000)
        self.queue(("release", (self.name, idle_ms, *entries)))

    def queue(self, op: Op) -> None:
        self._outbox.put_nowait(op)

    async def send(self) -> None:
        """The cluster updates, in order, what is waiting sent in one round trip: a job's
        ends are retried until Redis takes them; progress alone is dropped while Redis is
        away (every script is safe to run twice)."""
        while not self._abandon.is_set():  # see link.pause
            ops = [await self._outbox.get()]
            while not self._outbox.empty() and len(ops) < SEND_BATCH:
                ops.append(self._outbox.get_nowait())
            try:
                if all(name == "progress" for name, _ in ops):
                    with contextlib.suppress(*LOST):
                        await self.link.batch(ops)
                else:
                    call = functools.partial(self.link.batch, ops)
                    await retrying(call, "updates", self._abandon)
            except Exception:
                log.exception("worker %s: sending %d update(s) failed", self.name, len(ops))
            finally:
                for _ in ops:
                    self._outbox.task_done()

    async def drain(self) -> None:
        """Wait up to ``DRAIN_S`` for the outbox to be sent, then stop retrying (what is
        left is dropped)."""
        try:
            async with asyncio.timeout(DRAIN_S):
                await self._outbox.join()
        except TimeoutError:
            log.warning(
                "worker %s: Redis unreachable; %d update(s) dropped",
                self.name,
                self._outbox.qsize(),
            )
        self._abandon.set()
