"""What a job is: its request prepared, its state machine, and the events it emits."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from playground_rt import errors, schemas
from playground_rt.pipeline import images, registry


class JobState(enum.Enum):
    QUEUED = "queued"  # waiting in the executor's queue
    RUNNING = "running"  # on a worker thread
    COMPLETED = "completed"  # result on disk (computed now or found in the cache)
    FAILED = "failed"  # an op raised, timed out or the image could not be processed
    CANCELLED = "cancelled"  # every interest withdrew, an outright cancel, or shutdown


_NEXT: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.RUNNING, JobState.CANCELLED, JobState.FAILED}),
    JobState.RUNNING: frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED}),
    JobState.COMPLETED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


@dataclass(frozen=True)
class Prepared:
    """A validated request: everything needed to key, route and run it."""

    plan: registry.Plan
    source: images.Source
    checkpoint: Path | None
    job_id: str
    cache_key: str
    notes: tuple[str, ...]
    size: tuple[int, int]
    """The image's upright ``(width, height)`` from its header (``images.probe``)."""

    @property
    def pipeline_id(self) -> str:
        return self.plan.pipeline.id

    @property
    def kind(self) -> str:
        """What its duration depends on, for ETAs: the pipeline, and the model it runs
        (``rembg:u2net`` costs about 4x ``rembg:u2netp``; a custom ``.onnx`` is ``custom``)."""
        models = [m for s in self.plan.steps if (m := getattr(s.params, "model", None))]
        if not models:
            return self.pipeline_id
        return f"{self.pipeline_id}:{'custom' if self.checkpoint else models[0]}"


@dataclass(eq=False)
class Job:
    prepared: Prepared
    routed_backend: str
    state: JobState = JobState.QUEUED
    interests: set[str] = field(default_factory=set)
    client: str | None = None
    """Who queued it (remote address), for the per-client share of the queue."""
    result_path: Path | None = None
    cache_hit: bool = False
    detail: str | None = None
    code: str | None = None
    """A failure's kind (``errors``' codes: ``disk_full``, ``op_failed``...)."""
    held: Path | None = None
    """Its result, pinned against retention until its terminal frame is out (``jobs``)."""
    durations: dict[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.perf_counter)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    last_progress: float = 0.0
    pending_progress: schemas.Progress | None = None
    progress: schemas.Progress | None = None
    """The latest progress frame made (emitted or pending)."""
    outline_url: str | None = None
    """Its outline, once there is one (``outlines``): every later progress frame says so."""
    wide: bool = False
    """Alone in the pool when it started: its model runs on every core."""
    flush: asyncio.TimerHandle | None = None

    @property
    def id(self) -> str:
        return self.prepared.job_id

    @property
    def task_ids(self) -> frozenset[str]:
        return frozenset(i for i in self.interests if not i.startswith("anon:"))

    @property
    def terminal(self) -> bool:
        return not _NEXT[self.state]

    def move(self, new: JobState) -> None:
        if new not in _NEXT[self.state]:
            raise RuntimeError(
                f"job {self.id}: illegal transition {self.state.value} -> {new.value}"
            )
        self.state = new

    def check(self) -> None:
        """Raised into the worker thread between steps once the job must stop."""
        if self.stop.is_set():
            raise errors.JobCancelled(f"job {self.id} was cancelled")


@dataclass(frozen=True)
class JobEvent:
    """One frame about a job, for every subscriber of its id or of any of its taskIds.

    A ``withdrawn`` event is the terminal frame of followers who stopped following a job
    that goes on for others: it goes to ``task_ids`` only, never to the job's id
    subscribers, and it is not the job's outcome.
    """

    frame: schemas.JobFrame
    task_ids: frozenset[str]
    withdrawn: bool = False


Listener = Callable[[JobEvent], None]

Mode = Literal["preview", "fallback"]
"""How a request asks: a ``preview`` (the page may run it) or a ``fallback`` (the server does)."""


@dataclass
class Submission:
    job: Job
    status: Literal["accepted", "completed", "failed", "cancelled"]
    notes: list[str]
    joined: bool = False
    """True when an identical job was already in flight (single-flight)."""
    server_reasons: list[str] = field(default_factory=list)
    """Why a preview the page could have run goes to the server (empty otherwise)."""

    @property
    def queued(self) -> bool:
        """A new job was queued on the server (not joined, not the page's, not a hit)."""
        return (
            self.status == "accepted"
            and not self.joined
            and self.job.routed_backend != (CLIENT_BACKEND)
        )


CLIENT_BACKEND = "client-workers"


def without_image(prepared: Prepared) -> Prepared:
    """``prepared`` without its image bytes: finished jobs are kept for a while, bytes are not."""
    return dataclasses.replace(prepared, source=images.Source(b"", prepared.source.sha256))
