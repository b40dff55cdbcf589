"""The WebSocket hub: subscriptions, fan-out, replay and heartbeats (admission is the
edge's: ``web.ws``).

Frames (``docs/protocol.md``) are ``schemas`` Structs. A job frame from the job manager is
stamped once with the hub's next ``seq`` and its ``epoch``, kept in the replay buffer, and
encoded once per distinct ``taskId`` among its recipients; every recipient gets the same
``str``. A socket subscribed to a job by several keys (its taskId and its job_id) is one
recipient: it gets each frame once. :meth:`Hub.publish_job` is synchronous and only queues
(``connection``): no client is ever awaited, so one slow socket delays no other.

With ``settings.broker`` the frames this process produces also go to Redis and the frames of
the other processes come back from it (``broker``); every hub stamps what it delivers with
its *own* seq, so ``resume`` is exact against the same process and answers ``gap`` elsewhere.
In remote mode (``settings.execute``) the hub instead delivers every frame of the cluster's
history (``cluster``), and ``resume`` on another process replays from it by ``cursor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import msgspec
from prometheus_client import Counter
from starlette.types import Send
from starlette.websockets import WebSocket

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.hub import remote
from playground_rt.hub.broker import CancelMessage, FrameMessage, Message, RedisBroker
from playground_rt.hub.connection import CLOSE_TIMEOUT_S, Close, Connection, Droppable
from playground_rt.hub.replay import Entry, ReplayBuffer
from playground_rt.hub.telemetry import Telemetry
from playground_rt.jobs.cluster.feed import Feed
from playground_rt.jobs.cluster.wire import HistoryEntry
from playground_rt.jobs.job import JobEvent

log = logging.getLogger("playground_rt.hub.fanout")

MAX_SUBSCRIPTIONS = 256
"""Keys (taskIds, job ids, channels) one socket may follow."""
BROKER_SCHEMES = ("redis", "rediss", "unix")

_encoder = msgspec.json.Encoder()

Withdraw = Callable[[str | None, str], Coroutine[Any, Any, None]]
"""Applies another process's relayed withdrawal ``(job_id, task_id)`` here."""


def _encode(frame: schemas.ServerFrame) -> str:
    return _encoder.encode(frame).decode()


class Hub:
    encode = staticmethod(_encode)

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        *,
        feed: Feed | None = None,
        withdraw: Withdraw | None = None,
    ) -> None:
        """``feed``: the cluster's history in remote mode (``resume`` from another node
        replays from it; no broker then). ``withdraw``: applies withdrawals that other
        processes relay through the broker."""
        if settings.broker and urlsplit(settings.broker).scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"broker {settings.broker!r}: use a redis://, rediss:// or unix:// URL"
            )
        self.settings = settings
        self.telemetry = telemetry
        self.feed = feed
        self.withdraw = withdraw
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self.replay = ReplayBuffer()
        self.connections: set[Connection] = set()
        self.broker: RedisBroker | None = None
        self._subs: dict[str, set[Connection]] = {}
        self._frames: dict[str, Counter] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._broker_lost_at: int | None = None
        self._relayed: set[asyncio.Task[None]] = set()

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.broker and self.feed is None:
            self.broker = RedisBroker(
                self.settings.broker, self.epoch, self._on_broker, self._on_broker_state
            )
            await self.broker.start()
        self._tasks = [
            asyncio.create_task(self._every(self._sweep_tick(), self._sweep), name="hub-sweep"),
            asyncio.create_task(
                self._every(self.settings.telemetry_interval_s, self._telemetry),
                name="hub-telemetry",
            ),
        ]

    async def stop(self) -> None:
        """Close every socket (4500) once its queued frames went out, within a bound."""
        for conn in list(self.connections):
            conn.close(Close.SHUTTING_DOWN, "server shutting down; reconnect and resume")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S + 0.5):
                while self.connections:
                    await asyncio.sleep(0.01)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.broker is not None:
            await self.broker.stop()

    def _sweep_tick(self) -> float:
        s = self.settings
        return min(0.25, s.ws_send_timeout_s / 4, s.ws_ping_interval_s / 4)

    async def _every(self, interval: float, action: Callable[[float], None]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                action(time.monotonic())
            except Exception:  # task boundary: log, keep the hub alive
                log.exception("hub %s failed", getattr(action, "__name__", action))

    # --- publishing (synchronous, never awaits a client) -----------------------------------

    def publish_job(self, event: JobEvent) -> None:
        """Listener on the job manager: deliver here, and to other processes via Redis."""
        self._deliver(event.frame, event.task_ids, event.withdrawn)
        if self.broker is not None:
            message = FrameMessage(self.epoch, sorted(event.task_ids), event.frame, event.withdrawn)
            self.broker.publish(message)

    def deliver(self, entry: HistoryEntry) -> None:
        """A frame of the cluster's history (remote mode): every web node reads the history,
        so it is delivered here only."""
        self._deliver(entry.frame, entry.task_ids, entry.withdrawn)

    def _deliver(
        self, frame: schemas.JobFrame, task_ids: frozenset[str], withdrawn: bool = False
    ) -> None:
        seq = self.next_seq()
        base = msgspec.structs.replace(frame, seq=seq, epoch=self.epoch, taskId=None)
        entry = Entry(seq, base, task_ids, withdrawn)
        self.replay.append(entry)
        recipients = self._recipients(entry)
        texts: dict[str | None, str] = {}
        for conn, task_id in recipients.items():
            text = texts.get(task_id)
            if text is None:
                text = texts[task_id] = _encode(_with_task(base, task_id))
            conn.offer(text)
        self.count(base, len(recipients))

    def _recipients(self, entry: Entry) -> dict[Connection, str | None]:
        found: dict[Connection, str | None] = {}
        for task_id in sorted(entry.task_ids):
            for conn in self._subs.get("t:" + task_id, ()):
                found.setdefault(conn, task_id)
        if not entry.withdrawn:
            for conn in self._subs.get("j:" + entry.job_id, ()):
                found.setdefault(conn, None)
        return found

    def _broadcast(self, key: str, frame: schemas.ServerFrame, droppable: bool) -> None:
        conns = self._subs.get(key)
        if not conns:
            return
        text = _encode(self._stamp(frame))
        if droppable:
            text = Droppable(text)
        for conn in conns:
            conn.offer(text)
        self.count(frame, len(conns))

    def reply(self, conn: Connection, frame: schemas.ServerFrame) -> None:
        conn.offer(_encode(self._stamp(frame)))
        self.count(frame, 1)

    def _stamp(self, frame: schemas.ServerFrame) -> schemas.ServerFrame:
        frame.seq, frame.epoch = self.next_seq(), self.epoch
        return frame

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def count(self, frame: schemas.ServerFrame, n: int) -> None:
        if n:
            kind = frame.__struct_config__.tag
            assert isinstance(kind, str)
            counter = self._frames.get(kind)
            if counter is None:
                counter = self._frames[kind] = self.telemetry.ws_frames.labels(kind)
            counter.inc(n)

    def _dropped(self, reason: str, n: int) -> None:
        self.telemetry.ws_dropped.labels(reason).inc(n)

    # --- periodic --------------------------------------------------------------------------

    def _sweep(self, now: float) -> None:
        """Evict stuck senders, close silent clients, send heartbeats."""
        s = self.settings
        heartbeat: str | None = None
        for conn in list(self.connections):
            if conn.sending_since is not None and now - conn.sending_since > s.ws_send_timeout_s:
                conn.close(
                    Close.SLOW_CONSUMER,
                    f"slow consumer: a send took over {s.ws_send_timeout_s:g} s",
                )
            elif now - conn.last_received > 2 * s.ws_ping_interval_s:
                conn.close(Close.NO_PING, f"nothing received for {2 * s.ws_ping_interval_s:g} s")
            elif now - conn.last_heartbeat >= s.ws_ping_interval_s:
                if heartbeat is None:
                    heartbeat = Droppable(_encode(self._stamp(schemas.Pong())))
                conn.last_heartbeat = now
                conn.offer(heartbeat)

    def _telemetry(self, now: float) -> None:
        if self._subs.get("c:telemetry"):
            self._broadcast("c:telemetry", self.telemetry.snapshot(), droppable=True)

    # --- sockets ---------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        """No room for another socket (``ws_max_connections``)."""
        return len(self.connections) >= self.settings.ws_max_connections

    def attach(self, websocket: WebSocket, send: Send) -> Connection:
        """An admitted socket's connection, counted at once: the cap holds across awaits."""
        conn = Connection(websocket, send, self.settings.ws_send_queue, self._dropped)
        self.connections.add(conn)
        self.telemetry.ws_connections.inc()
        return conn

    def detach(self, conn: Connection) -> None:
        """The socket is gone: close its sender and forget its subscriptions."""
        conn.close(Close.NORMAL, "")
        self.unsubscribe(conn, set(conn.keys))
        self.connections.discard(conn)
        self.telemetry.ws_connections.dec()

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(self, conn: Connection, keys: set[str]) -> set[str]:
        """Add ``keys``; returns those that are new. ``BadRequest`` past the cap."""
        added = keys - conn.keys
        if len(conn.keys) + len(added) > MAX_SUBSCRIPTIONS:
            raise errors.BadRequest(
                f"a socket follows at most {MAX_SUBSCRIPTIONS} taskIds, jobs and channels"
            )
        if conn.live_since is None and added:
            conn.live_since = self.seq + 1
        for key in added:
            conn.keys.add(key)
            self._subs.setdefault(key, set()).add(conn)
        return added

    def unsubscribe(self, conn: Connection, keys: set[str]) -> None:
        for key in keys & conn.keys:
            conn.keys.discard(key)
            subscribers = self._subs.get(key)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._subs[key]

    # --- client frames ---------------------------------------------------------------------

    @property
    def relaying(self) -> bool:
        """Withdrawals can reach the other processes (a connected broker)."""
        return self.broker is not None and self.broker.connected.is_set()

    def relay_cancel(self, job_id: str | None, task_id: str) -> None:
        """Send a withdrawal to the other processes (when :attr:`relaying`)."""
        if self.relaying:
            assert self.broker is not None
            self.broker.publish(CancelMessage(self.epoch, job_id, task_id))

    async def resume(self, conn: Connection, frame: schemas.Resume) -> None:
        """Subscribe, then replay what the socket missed, in seq order, paged: the replay
        is queued as one entry and encoded frame by frame as the client reads it, so any
        number of frames (up to the buffer's) arrives, and the socket is never evicted
        for its length. What follows (``gap``, the ``ack``, live frames) comes after it.
        One replay at a time: a resume before the previous one's ack is refused."""
        if conn.pages:
            raise errors.BadRequest("the previous resume is still being replayed: await its ack")
        if frame.cursor is not None and frame.epoch != self.epoch and self.feed is not None:
            await remote.replay(self, self.feed, conn, frame)
            return
        before = frozenset(conn.keys)
        self.subscribe(conn, {"t:" + t for t in frame.taskIds} | {"j:" + j for j in frame.job_ids})
        same = frame.epoch == self.epoch or (frame.epoch is None and frame.last_seq == 0)
        start = frame.last_seq if same else 0
        missed = self.replay.missed(start, conn.keys, before, conn.live_since)
        if missed:
            conn.page(_encode(_with_task(entry.frame, task_id)) for entry, task_id in missed)
        if not same or frame.last_seq < self.replay.dropped_upto:
            detail = "another epoch (the server restarted)" if not same else "frames were discarded"
            self.reply(conn, self.gap(frame.last_seq, f"{detail}; refetch job state over REST"))

    def gap(self, from_seq: int, detail: str) -> schemas.Gap:
        oldest = self.replay.oldest_seq(self.seq + 1)
        return schemas.Gap(from_seq=from_seq, oldest_seq=oldest, detail=detail)

    # --- broker ----------------------------------------------------------------------------

    def _on_broker(self, message: Message) -> None:
        if isinstance(message, FrameMessage):
            self._deliver(message.frame, frozenset(message.task_ids), message.withdrawn)
        elif message.task_id is not None and self.withdraw is not None:
            task = asyncio.create_task(self.withdraw(message.job_id, message.task_id))
            self._relayed.add(task)
            task.add_done_callback(self._relayed.discard)

    def _on_broker_state(self, connected: bool) -> None:
        if not connected:
            self._broker_lost_at = self.seq
            return
        if self._broker_lost_at is None:
            return
        detail = (
            "the broker reconnected: frames from other processes may be missing; refetch job state"
        )
        self._gap_all(self._broker_lost_at, detail)
        self._broker_lost_at = None

    def history_lost(self, detail: str) -> None:
        """Remote mode: frames of the cluster's history may be missing (Redis lost them)."""
        self._gap_all(self.seq, f"{detail}; refetch job state")

    def _gap_all(self, from_seq: int, detail: str) -> None:
        """A ``gap`` to every socket that follows a task or a job."""
        for conn in self.connections:
            if any(not key.startswith("c:") for key in conn.keys):
                self.reply(conn, self.gap(from_seq, detail))


# --- helpers ------------------------------------------------------------------------------


def _with_task(frame: schemas.JobFrame, task_id: str | None) -> schemas.JobFrame:
    return frame if task_id is None else msgspec.structs.replace(frame, taskId=task_id)
