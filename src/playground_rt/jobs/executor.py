"""A bounded queue in front of N worker threads, driven from the event loop.

The queue lives on the loop (a deque: queued jobs can be removed from the middle on cancel
or supersede, and their position is known for ``queued`` frames). Each of the N worker
*slots* is an asyncio task that takes the next job and runs it on a one-thread pool of its
own. A job past its time budget is failed at once (its followers hear it then), and its thread
is told to stop at its next cancellation check. The slot waits for that thread before it
takes another job, so abandoned work still counts against the pool's capacity; only a
thread that outlives a second budget is given up on (logged) and replaced, so a stuck op
costs one thread, never a worker.

Worker threads are daemon threads: when the process exits after the shutdown drain, an
op still running cannot hold the exit (its job has been told it was cancelled, and results
are written atomically, so nothing half-written is left behind).

Sizing: N x onnxruntime intra-op threads should not exceed the cores; ``Settings``
derives N from that.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from playground_rt import errors

log = logging.getLogger("playground_rt.jobs.executor")

J = TypeVar("J")
R = TypeVar("R")

MODEL_DURATION_S = {"u2netp": 0.5, "silueta": 0.5, "u2net": 2.0}
"""First guesses per model before a job of that kind has run (u2net ~4x u2netp); other
models (bigger, or a custom ``.onnx``) are guessed at ``UNKNOWN_MODEL_S``."""
UNKNOWN_MODEL_S = 2.0
NO_MODEL_S = 0.05
EWMA_WEIGHT = 0.3


def default_duration_s(kind: str) -> float:
    """A first guess for a ``kind`` (``pipeline`` or ``pipeline:model``, ``Prepared.kind``)."""
    _, _, model = kind.partition(":")
    return MODEL_DURATION_S.get(model, UNKNOWN_MODEL_S) if model else NO_MODEL_S


@dataclass
class Stats:
    """What telemetry frames and ``/metrics`` report about the pool."""

    queue_depth: int = 0
    running: int = 0
    workers: int = 0
    completed: int = 0
    abandoned: int = 0
    """Threads given up on: they outlived their job's budget twice without stopping."""
    durations_s: dict[str, float] = field(default_factory=dict)
    """Moving average of run time per pipeline."""


class _Closed(Exception):
    pass


class _Settled:
    """A timed-out job's outcome: it was settled when its budget ran out."""


_SETTLED = _Settled()


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve an outcome nobody awaits any more (a timed-out job's, or one whose slot was
    cancelled at shutdown), so asyncio does not log it as never retrieved."""
    if not future.cancelled():
        future.exception()


class _Thread:
    """One daemon thread running submitted calls in order (a slot's worker)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def submit(self, call: Callable[[], R]) -> Future[R]:
        future: Future[R] = Future()
        self._calls.put((call, future))
        return future

    def stop(self) -> None:
        """Let the thread end once the call in hand (if any) returns."""
        self._calls.put(None)

    def _loop(self) -> None:
        while (item := self._calls.get()) is not None:
            call, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(call())
            except BaseException as exc:
                future.set_exception(exc)


class Executor(Generic[J, R]):
    """Runs ``run(job)`` on worker threads and hands each outcome to ``settle`` on the loop.

    ``settle(job, result_or_exception)`` is called exactly once per job taken from the queue;
    jobs removed with :meth:`remove` are never run nor settled.
    """

    def __init__(
        self,
        *,
        workers: int,
        queue_size: int,
        timeout_s: float,
        run: Callable[[J], R],
        settle: Callable[[J, R | BaseException], None],
        started: Callable[[J], None],
        kind: Callable[[J], str],
        on_timeout: Callable[[J], None],
    ) -> None:
        self.workers = workers
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._run, self._settle, self._started = run, settle, started
        self._kind, self._on_timeout = kind, on_timeout
        self._queue: deque[J] = deque()
        self._wake = asyncio.Event()
        self._slots: list[asyncio.Task[None]] = []
        self._threads: list[_Thread] = []
        self._closing = False
        self.stats = Stats(workers=workers)

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        assert not self._slots, "already started"
        for index in range(self.workers):
            self._threads.append(self._new_thread(index))
            self._slots.append(asyncio.create_task(self._slot(index), name=f"slot-{index}"))

    def close(self) -> list[J]:
        """Stop taking jobs; return the ones still queued (never run, never settled)."""
        self._closing = True
        left = list(self._queue)
        self._queue.clear()
        self.stats.queue_depth = 0
        self._wake.set()
        return left

    async def join(self, timeout_s: float) -> None:
        """Wait for the slots to finish their running jobs; cancel those still going after
        ``timeout_s`` (their jobs are then never settled: the caller finishes them)."""
        if self._slots:
            _, pending = await asyncio.wait(self._slots, timeout=timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*self._slots, return_exceptions=True)
        for thread in self._threads:
            thread.stop()

    @property
    def accepting(self) -> bool:
        return bool(self._slots) and not self._closing

    # --- queue -----------------------------------------------------------------------------

    def submit(self, job: J) -> int:
        """Queue ``job``; returns its 0-based position or raises ``QueueFull``/``NotReady``."""
        if not self.accepting:
            raise errors.NotReady("the executor is not running (starting or shutting down)")
        if len(self._queue) >= self.queue_size:
            seconds = self.retry_after()
            raise errors.QueueFull.waiting(len(self._queue), seconds)
        self._queue.append(job)
        self.stats.queue_depth = len(self._queue)
        self._wake.set()
        return len(self._queue) - 1

    def remove(self, job: J) -> bool:
        """Take a queued job out; False if it already left the queue."""
        try:
            self._queue.remove(job)
        except ValueError:
            return False
        self.stats.queue_depth = len(self._queue)
        return True

    def position(self, job: J) -> int | None:
        try:
            return self._queue.index(job)
        except ValueError:
            return None

    def queued(self) -> list[J]:
        return list(self._queue)

    # --- estimates -------------------------------------------------------------------------

    def average_s(self, kind: str) -> float:
        return self.stats.durations_s.get(kind, default_duration_s(kind))

    def eta_ms(self, position: int) -> int:
        """Time until the job at ``position`` finishes, from recent durations."""
        ahead = sum(self.average_s(self._kind(j)) for j in list(self._queue)[:position])
        busy = self.stats.running * 0.5 * max(self.stats.durations_s.values(), default=0.05)
        mine = (
            self.average_s(self._kind(self._queue[position])) if position < len(self._queue) else 0
        )
        return int(1000 * ((ahead + busy) / self.workers + mine))

    def retry_after(self, jobs: list[J] | None = None) -> int:
        """Seconds until ``jobs`` (default: the whole queue) are likely done."""
        backlog = sum(
            self.average_s(self._kind(j)) for j in (self._queue if jobs is None else jobs)
        )
        return max(1, math.ceil(backlog / self.workers))

    # --- workers ---------------------------------------------------------------------------

    def _new_thread(self, index: int) -> _Thread:
        return _Thread(f"playground-worker-{index}")

    async def _next(self) -> J:
        while True:
            if self._queue:
                job = self._queue.popleft()
                self.stats.queue_depth = len(self._queue)
                return job
            if self._closing:
                raise _Closed
            self._wake.clear()
            await self._wake.wait()

    async def _slot(self, index: int) -> None:
        while True:
            try:
                job = await self._next()
            except _Closed:
                return
            self.stats.running += 1
            started = time.perf_counter()
            try:
                self._started(job)
                outcome = await self._run_one(index, job)
            finally:
                self.stats.running -= 1
            self._record(self._kind(job), time.perf_counter() - started)
            if not isinstance(outcome, _Settled):
                self._settle_safely(job, outcome)

    async def _run_one(self, index: int, job: J) -> R | BaseException | _Settled:
        """The job's outcome; past its budget the job is settled as failed at once, and
        this returns (``_SETTLED``) only once its thread stopped or was given up on."""
        future = asyncio.wrap_future(self._threads[index].submit(lambda: self._run(job)))
        future.add_done_callback(_consume)  # also when this slot is cancelled at shutdown
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            pass
        except Exception as exc:  # the job's own failure, settled by the caller
            return exc
        self._on_timeout(job)
        budget = errors.OpFailed(f"job exceeded its time budget of {self.timeout_s:g} s")
        self._settle_safely(job, budget)
        done, _ = await asyncio.wait([future], timeout=self.timeout_s)
        if not done:
            log.warning("a worker thread ignored its stop for %g s; replacing it", self.timeout_s)
            self._threads[index].stop()
            self._threads[index] = self._new_thread(index)
            self.stats.abandoned += 1
        return _SETTLED

    def _settle_safely(self, job: J, outcome: R | BaseException) -> None:
        try:
            self._settle(job, outcome)
        except Exception:
            log.exception("settling a job failed")

    def _record(self, kind: str, seconds: float) -> None:
        old = self.stats.durations_s.get(kind)
        self.stats.durations_s[kind] = (
            seconds if old is None else old + EWMA_WEIGHT * (seconds - old)
        )
        self.stats.completed += 1
