"""One Redis connection pool for a web node or a worker, and the cluster's scripts on it.

Every call that fails because Redis is away raises :data:`LOST` errors; the callers decide:
a state change (a job's end, a submission) is retried with backoff until Redis is back, a
progress frame is dropped. The scripts are loaded by SHA and reloaded by redis-py when a
restarted Redis no longer has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from playground_rt.config import Settings
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.scripts import PRELUDE, SCRIPTS

log = logging.getLogger("playground_rt.jobs.cluster")

LOST = (RedisConnectionError, RedisTimeoutError, OSError)
"""What a call raises while Redis is unreachable (worth retrying)."""
BACKOFF_S = (0.1, 2.0)
COMMAND_TIMEOUT_S = 10.0
BLOCK_MS = 1000
"""How long a blocking read (``XREAD``/``XREADGROUP``) waits for news."""

T = TypeVar("T")


class Link:
    def __init__(self, settings: Settings) -> None:
        if not settings.broker:
            raise ValueError("the cluster needs a broker: set PLAYGROUND_BROKER=redis://...")
        self.settings = settings
        self.redis: aioredis.Redis = aioredis.from_url(
            settings.broker,
            # One retry: after Redis restarts, each pooled connection fails once (stale).
            retry=Retry(NoBackoff(), 1),
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            health_check_interval=0,
        )
        self._scripts: dict[str, AsyncScript] = {
            name: self.redis.register_script(PRELUDE + body) for name, body in SCRIPTS.items()
        }
        self._header = [
            wire.PREFIX,
            str(settings.history_frames),
            str(int(settings.history_ttl_s * 1000)),
        ]
        self.incarnation: str | None = None
        self.where = redacted(settings.broker)
        """The broker's address for logs (no password)."""

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    async def run(self, script: str, *args: str | bytes | int | float) -> Any:
        """Run one of :data:`~.scripts.SCRIPTS` with its own arguments."""
        return await self._scripts[script](args=[*self._header, *args])

    async def batch(self, calls: list[tuple[str, tuple[str | bytes | int | float, ...]]]) -> None:
        """Run several scripts in one round trip, in order (a pipeline, not a transaction);
        a script's own error is logged, a lost connection raised (the caller retries all:
        every script is safe to run twice)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, args in calls:
                await self._scripts[name](args=[*self._header, *args], client=pipe)
            results = await pipe.execute(raise_on_error=False)
        for (name, _), result in zip(calls, results, strict=True):
            if isinstance(result, LOST):
                raise result
            if isinstance(result, Exception):
                log.error("cluster script %s failed: %s", name, result)

    async def ensure_group(self) -> None:
        """Create the ``jobs`` stream and its group if missing (from id 0: nothing queued
        before the group existed is skipped)."""
        try:
            await self.redis.xgroup_create(wire.JOBS, wire.GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def check_incarnation(self) -> bool:
        """Remember this Redis's incarnation; True when it differs from the one seen before
        (Redis restarted without persistence: everything it held is gone)."""
        await self.redis.set(wire.INCARNATION, secrets.token_hex(8), nx=True)
        raw = await self.redis.get(wire.INCARNATION)
        now = raw.decode() if isinstance(raw, bytes) else str(raw)
        changed = self.incarnation is not None and now != self.incarnation
        self.incarnation = now
        return changed


async def retrying(
    call: Callable[[], Awaitable[T]],
    what: str,
    stop: asyncio.Event,
    retry_on: tuple[type[BaseException], ...] = LOST,
) -> T | None:
    """``call()`` until it succeeds, backing off while it raises ``retry_on`` (Redis is
    away); ``None`` once ``stop`` is set (shutdown)."""
    backoff = BACKOFF_S[0]
    warned = False
    while not stop.is_set():
        try:
            return await call()
        except retry_on as exc:
            if not warned:
                log.warning("%s: Redis unreachable (%s); retrying", what, exc)
                warned = True
        await pause(stop, backoff)
        backoff = min(backoff * 2, BACKOFF_S[1])
    return None


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Wait ``seconds``, or until ``stop`` is set.

    A background loop waits with this and runs ``while not stop.is_set()``, never on
    cancellation alone: redis-py can turn a cancel that lands in a command into a connection
    error (redis/redis-py#2028, #2551), which a loop that rides out Redis's absence would
    swallow, and the shutdown's ``gather`` would wait on it forever.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


def redacted(url: str) -> str:
    """``url`` without its credentials (``redis://:secret@host:6379/0`` → ``redis://host:6379/0``)."""
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def text(value: Any) -> str:
    """A Redis reply (bytes) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
