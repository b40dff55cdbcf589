"""What a web node knows about the whole cluster: its workers, queue and durations.

:class:`Figures` reads them every ``POLL_S`` into the node's executor ``Stats`` (so the
telemetry frames, ``/metrics``, ETAs and ``Retry-After`` are the cluster's), and keeps the
live workers' heartbeats for the telemetry frames' ``cluster`` list and for
:class:`ClusterModels`, the request-time model check of a node that loads no model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from playground_rt import errors, schemas
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.link import LOST, Link, pause, text
from playground_rt.jobs.executor import Stats, default_duration_s
from playground_rt.pipeline.ops.base import SessionProvider
from playground_rt.pipeline.sessions import SERVABLE_MODELS

log = logging.getLogger("playground_rt.jobs.cluster")

POLL_S = 0.5
"""How often the node reads the cluster's figures (queue, workers, durations)."""


class ClusterModels(SessionProvider):
    """Request-time model checks on a web node: a name rembg serves, and a file some live
    worker has (while no worker is known, jobs wait for one)."""

    def __init__(self, workers: Callable[[], list[schemas.WorkerStatus]]) -> None:
        self._workers = workers

    def require(self, model: str) -> Path:
        if model not in SERVABLE_MODELS:
            raise errors.InvalidParams(
                f"model {model!r} is not a rembg model served by name; "
                f"known: {', '.join(SERVABLE_MODELS)}"
            )
        workers = self._workers()
        if workers and not any(model in w.models for w in workers):
            raise errors.ModelUnavailable(
                f"no worker has model {model!r}; run `playground-rt models pull --model "
                f"{model}` on a worker host"
            )
        return Path(model)


class Figures:
    def __init__(self, link: Link, stats: Stats) -> None:
        self.link = link
        self.stats = stats
        self.workers: list[schemas.WorkerStatus] = []
        """The live workers, as last read."""

    async def run(self, stop: asyncio.Event) -> None:
        """The cluster's figures for telemetry, ETAs and ``Retry-After``, until ``stop``."""
        while not stop.is_set():
            try:
                await self.read()
            except LOST:
                pass
            except Exception:  # task boundary: log and keep polling
                log.exception("reading the cluster's figures failed")
            await pause(stop, POLL_S)

    async def read(self) -> None:
        redis = self.link.redis
        async with redis.pipeline(transaction=False) as pipe:
            pipe.zcard(wire.QUEUE)
            pipe.smembers(wire.WORKERS)
            pipe.hgetall(wire.DURATIONS)
            depth, names, durations = await pipe.execute()
        names = sorted(text(n) for n in names)
        beats: list[Any] = []
        if names:
            beats = await redis.mget([wire.worker_key(n) for n in names])
        workers = []
        for name, beat in zip(names, beats, strict=True):
            if beat is None:
                await redis.srem(wire.WORKERS, name)
                continue
            with contextlib.suppress(msgspec.DecodeError):
                workers.append(wire.decode_beat(beat))
        self.workers = workers
        stats = self.stats
        stats.queue_depth = int(depth)
        stats.running = sum(w.running for w in workers)
        stats.workers = sum(w.threads for w in workers)
        stats.completed = sum(w.done for w in workers)
        stats.durations_s = {text(k): float(v) / 1000 for k, v in durations.items()}

    # --- estimates from the cluster's figures ---------------------------------------------

    def seconds_for(self, jobs: int) -> int:
        """Seconds until that many jobs are likely done by the cluster's workers."""
        stats = self.stats
        average = max(stats.durations_s.values(), default=default_duration_s("rembg:u2netp"))
        return max(1, math.ceil(jobs * average / max(1, stats.workers)))

    def eta_ms(self, position: int, kind: str) -> int:
        """Time until the job at ``position`` of the cluster's queue finishes."""
        stats = self.stats
        average = stats.durations_s.get(kind, default_duration_s(kind))
        return int(1000 * (position * average / max(1, stats.workers) + average))
