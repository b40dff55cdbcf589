"""The executor used alone: a bounded queue in front of worker threads, driven from a loop.

Jobs here are plain objects whose ``run`` sleeps; no server, no model.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest

from playground_rt import errors
from playground_rt.jobs.executor import Executor


@dataclass(eq=False)
class Sleeper:
    """A job that runs ``seconds`` without looking at its stop flag, then checks it."""

    name: str
    seconds: float
    stop: threading.Event = field(default_factory=threading.Event)


class Pool:
    """An executor of ``Sleeper`` jobs that records what ran at once and how each ended."""

    def __init__(self, workers: int, timeout_s: float) -> None:
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()
        self.outcomes: dict[str, str] = {}
        self.order: list[str] = []
        """``"settled <name>"`` and ``"thread of <name> ended"``, as they happened."""
        self.settled: dict[str, asyncio.Event] = {}
        self.executor: Executor[Sleeper, str] = Executor(
            workers=workers,
            queue_size=8,
            timeout_s=timeout_s,
            run=self.run,
            settle=self.settle,
            started=lambda job: None,
            kind=lambda job: "sleep",
            on_timeout=lambda job: job.stop.set(),
        )

    def run(self, job: Sleeper) -> str:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(job.seconds)
            if job.stop.is_set():
                raise errors.JobCancelled("stopped")
            return "done"
        finally:
            with self.lock:
                self.running -= 1
                self.order.append(f"thread of {job.name} ended")

    def settle(self, job: Sleeper, outcome: str | BaseException) -> None:
        self.outcomes[job.name] = outcome if isinstance(outcome, str) else type(outcome).__name__
        with self.lock:
            self.order.append(f"settled {job.name}")
        self.settled.setdefault(job.name, asyncio.Event()).set()

    async def ended(self, name: str, timeout: float = 10) -> str:
        event = self.settled.setdefault(name, asyncio.Event())
        await asyncio.wait_for(event.wait(), timeout)
        return self.outcomes[name]


async def test_a_timed_out_job_fails_at_once_but_keeps_its_slot_until_its_thread_stops() -> None:
    pool = Pool(workers=1, timeout_s=0.2)
    pool.executor.start()
    pool.executor.submit(Sleeper("slow", seconds=0.35))  # ignores its stop for 0.35 s
    pool.executor.submit(Sleeper("next", seconds=0.05))
    assert await pool.ended("slow") == "OpFailed"
    assert await pool.ended("next") == "done"
    assert pool.order == [  # told at its budget; "next" waited for the slow thread
        "settled slow",
        "thread of slow ended",
        "thread of next ended",
        "settled next",
    ]
    assert pool.most_at_once == 1 and pool.executor.stats.abandoned == 0
    pool.executor.close()
    await pool.executor.join(timeout_s=1)


async def test_a_thread_that_ignores_its_stop_is_given_up_after_a_second_budget() -> None:
    pool = Pool(workers=1, timeout_s=0.1)
    pool.executor.start()
    pool.executor.submit(Sleeper("stuck", seconds=1.0))
    pool.executor.submit(Sleeper("next", seconds=0.01))
    assert await pool.ended("stuck") == "OpFailed"
    assert await pool.ended("next") == "done"
    assert pool.executor.stats.abandoned == 1
    pool.executor.close()
    await pool.executor.join(timeout_s=1)


async def test_worker_threads_never_hold_the_process_exit() -> None:
    pool = Pool(workers=2, timeout_s=5)
    pool.executor.start()
    pool.executor.submit(Sleeper("a", seconds=0.01))
    await pool.ended("a")
    workers = [t for t in threading.enumerate() if t.name.startswith("playground-worker-")]
    assert workers and all(t.daemon for t in workers)
    pool.executor.close()
    await pool.executor.join(timeout_s=1)


async def test_a_full_queue_refuses_with_a_retry_hint() -> None:
    pool = Pool(workers=1, timeout_s=5)
    pool.executor.queue_size = 1
    pool.executor.start()
    pool.executor.submit(Sleeper("running", seconds=0.2))
    await asyncio.sleep(0.05)  # taken by the slot
    pool.executor.submit(Sleeper("queued", seconds=0.01))
    with pytest.raises(errors.QueueFull) as refused:
        pool.executor.submit(Sleeper("refused", seconds=0.01))
    assert refused.value.retry_after >= 1
    assert await pool.ended("queued") == "done"
    pool.executor.close()
    await pool.executor.join(timeout_s=1)
