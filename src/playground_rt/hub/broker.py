"""Fan-out between hub processes through Redis pub/sub (``--broker redis://...``).

Every hub publishes the job frames *it* produced, with their routing keys, on one Redis
channel and delivers what the other hubs published to its own sockets; a hub delivers its
own frames locally without the round trip (and ignores their echo), so a Redis outage never
costs a local socket a frame. Redis delivers one publisher's messages in order, and every
frame of a job comes from the one process that runs it: per job, order holds everywhere.

Losing Redis: the hub logs it, keeps serving local sockets, drops what it would have
published meanwhile, reconnects with backoff (0.1 s doubling to 5 s), and then calls
``on_reconnect`` (the hub sends its sockets a ``gap``: frames from other processes may be
missing). Pub/sub keeps no history, so nothing else is recovered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from playground_rt import schemas
from playground_rt.jobs.cluster.link import pause

log = logging.getLogger("playground_rt.hub.fanout")

CHANNEL = "playground-rt:frames"
OUTBOX = 10_000
"""Messages waiting for Redis; past it they are dropped (and logged)."""
BATCH = 256
BACKOFF_S = (0.1, 5.0)
FIRST_CONNECT_S = 2.0


class FrameMessage(msgspec.Struct, tag_field="kind", tag="frame"):
    """A job frame (seq/epoch unset: each hub stamps its own) and who may follow it."""

    origin: str
    task_ids: list[str]
    frame: schemas.JobFrame
    withdrawn: bool = False


class CancelMessage(msgspec.Struct, tag_field="kind", tag="cancel"):
    """A withdrawal received by one hub, for the hub that runs the job (``job_id`` None:
    every job the task follows)."""

    origin: str
    job_id: str | None
    task_id: str | None


Message = FrameMessage | CancelMessage
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


class RedisBroker:
    def __init__(
        self,
        url: str,
        origin: str,
        on_message: Callable[[Message], None],
        on_state: Callable[[bool], None],
    ) -> None:
        self.url = url
        self.origin = origin
        self._on_message = on_message
        self._on_state = on_state
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX)
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.connected = asyncio.Event()
        self.dropped = 0

    async def start(self) -> None:
        """Connect in the background; wait up to ``FIRST_CONNECT_S`` for the first time."""
        self._task = asyncio.create_task(self._run(), name="redis-broker")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FIRST_CONNECT_S):
                await self.connected.wait()
        if not self.connected.is_set():
            log.warning("broker %s not reachable yet; serving local sockets, retrying", self.url)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish(self, message: Message) -> None:
        """Queue ``message`` for Redis; never blocks (dropped while Redis is away)."""
        if not self.connected.is_set():
            self.dropped += 1
            return
        try:
            self._outbox.put_nowait(_encoder.encode(message))
        except asyncio.QueueFull:
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning("broker outbox full: %d messages dropped so far", self.dropped)

    async def _run(self) -> None:
        backoff = BACKOFF_S[0]
        while not self._stopping.is_set():  # see link.pause
            try:
                await self._session()
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning(
                        "broker %s lost (%s); local sockets still served, reconnecting",
                        self.url,
                        exc,
                    )
            finally:
                if self.connected.is_set():
                    backoff = BACKOFF_S[0]
                    self.connected.clear()
                    self._on_state(False)
                _drain(self._outbox)
            await pause(self._stopping, backoff)
            backoff = min(backoff * 2, BACKOFF_S[1])

    async def _session(self) -> None:
        client = aioredis.from_url(self.url, retry=Retry(NoBackoff(), 0), socket_timeout=None)
        try:
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(CHANNEL)
            self.connected.set()
            log.info("broker %s connected", self.url)
            self._on_state(True)
            tasks = [
                asyncio.create_task(self._listen(pubsub)),
                asyncio.create_task(self._send(client)),
            ]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()
        finally:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        async for raw in pubsub.listen():
            if raw.get("type") != "message":
                continue
            try:
                message = _decoder.decode(raw["data"])
            except msgspec.DecodeError as exc:
                log.warning("ignored a malformed message on %s: %s", CHANNEL, exc)
                continue
            if message.origin == self.origin:
                continue
            try:
                self._on_message(message)
            except Exception:  # a bug in delivery must not cost the subscription
                log.exception("delivering a broker message failed")
        raise RedisError("subscription ended")

    async def _send(self, client: aioredis.Redis) -> None:
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            async with client.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.publish(CHANNEL, data)
                await pipe.execute()


def _drain(queue: asyncio.Queue[bytes]) -> None:
    while not queue.empty():
        queue.get_nowait()
