"""A worker's periodic work in Redis while it runs, beside taking entries.

What keeps the worker's jobs and its place in the group true in Redis: it watches the jobs
in hand for a cancel (or a takeover) from anywhere in the cluster, renews its claim on their
entries so no other worker takes a live worker's jobs, beats its heartbeat for telemetry,
and forgets the group's consumers that are gone. Each runs in its own loop, so a slow or
failing one never holds up the others or the take loop; a round that finds Redis away is
skipped quietly (the take loop reports it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from redis.exceptions import ResponseError

from playground_rt import schemas
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.link import LOST, Link, pause, text
from playground_rt.jobs.cluster.updates import Hand
from playground_rt.jobs.manager import JobManager

log = logging.getLogger("playground_rt.worker")

WATCH_S = 0.1
"""How often a worker reads the state of the jobs it runs (cancel reaches it this fast)."""
HEARTBEAT_S = 1.0
HEARTBEAT_TTL_MS = 5000
"""A worker silent this long is gone from telemetry."""
CLEANUP_S = 30.0
"""How often a worker forgets the group's dead consumers (no entries, no heartbeat)."""


class Upkeep:
    """The loops of worker ``name`` over the jobs in ``hands`` (read only: the take loop and
    the job manager's events change it), until ``stop`` is set; ``status`` is what its
    heartbeat says."""

    def __init__(
        self,
        link: Link,
        name: str,
        claim_idle_s: float,
        hands: Mapping[str, Hand],
        jobs: JobManager,
        status: Callable[[], schemas.WorkerStatus],
        stop: asyncio.Event,
    ) -> None:
        self.link = link
        self.name = name
        self.claim_idle_s = claim_idle_s
        self.hands = hands
        self.jobs = jobs
        self.status = status
        self.stop = stop

    def start(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._every(WATCH_S, self._watch), name="worker-watch"),
            asyncio.create_task(
                self._every(self.claim_idle_s / 3, self._keepalive),
                name="worker-keepalive",
            ),
            asyncio.create_task(self._every(HEARTBEAT_S, self._heartbeat), name="worker-beat"),
            asyncio.create_task(self._every(CLEANUP_S, self._cleanup), name="worker-cleanup"),
        ]

    async def _every(self, interval: float, action: Callable[[], Awaitable[None]]) -> None:
        while not self.stop.is_set():
            try:
                await action()
            except LOST:
                pass  # the take loop reports Redis's absence
            except Exception:  # task boundary: log, keep going
                log.exception("worker %s failed", action.__name__)
            await pause(self.stop, interval)

    async def _watch(self) -> None:
        """Stop jobs that ended in the cluster (cancelled, or run by another worker now)."""
        hands = list(self.hands.values())
        if not hands:
            return
        async with self.link.redis.pipeline(transaction=False) as pipe:
            for hand in hands:
                pipe.hmget(wire.job_key(hand.job_id), ["state", "worker", "entry"])
            states: list[list[bytes | None]] = await pipe.execute()
        for hand, (state, worker, entry) in zip(hands, states, strict=True):
            if self.hands.get(hand.job_id) is not hand:
                continue
            mine = entry is not None and text(entry) == hand.entry
            if mine and state == b"running" and worker is not None and text(worker) == self.name:
                continue
            hand.after_cancel = "leave" if mine and state == b"running" else "ack"
            why = "another worker took it over" if hand.after_cancel == "leave" else "it ended"
            log.info("job %s: stopping here (%s)", hand.job_id, why)
            await self.jobs.cancel(hand.job_id)

    async def _keepalive(self) -> None:
        """Renew the claim on the entries in hand (a live worker's jobs are never taken)."""
        entries = [hand.entry for hand in self.hands.values()]
        if entries:
            await self.link.run("keepalive", self.name, *entries)

    async def _heartbeat(self) -> None:
        beat = self.status()
        async with self.link.redis.pipeline(transaction=False) as pipe:
            pipe.set(wire.worker_key(self.name), wire.encode_beat(beat), px=HEARTBEAT_TTL_MS)
            pipe.sadd(wire.WORKERS, self.name)
            await pipe.execute()

    async def _cleanup(self) -> None:
        """Forget consumers of the group that hold nothing and have no heartbeat (workers
        that are gone), so the group's consumer list does not grow forever."""
        redis = self.link.redis
        try:
            consumers: Any = await redis.xinfo_consumers(wire.JOBS, wire.GROUP)
        except ResponseError:  # no stream or group yet: no consumer to forget
            return
        for consumer in consumers:
            name = text(consumer["name"])
            if name == self.name or int(consumer["pending"]) > 0:
                continue
            if int(consumer.get("idle", 0)) > CLEANUP_S * 1000 and not await redis.exists(
                wire.worker_key(name)
            ):
                await redis.xgroup_delconsumer(wire.JOBS, wire.GROUP, name)
