"""One accepted WebSocket: a bounded outbox, one sender task, and a supervisor.

Contract (what the hub relies on):

* :meth:`Connection.offer` is synchronous and never awaits the client. When the outbox is
  full, a :class:`Droppable` frame (telemetry, heartbeat) is dropped; any other frame
  takes the place of the oldest droppable one queued, and when there is none the socket is
  closed with :attr:`Close.SLOW_CONSUMER` at once.
* :meth:`Connection.page` queues a replay (``resume``) that is *not* bound by the outbox
  limit: its frames are produced one at a time as the sender reaches them, in the place the
  replay was queued, so a replay of any length is delivered in order as the client reads
  it, and costs one iterator, not a queued copy of each frame. Frames offered after it wait
  behind it, under the usual limit.
* Exactly one task sends. It records when the send in hand started (``sending_since``), so
  the hub's sweep can evict a socket whose send is stuck: a client that stops reading makes
  ``send`` wait forever in every uvicorn implementation, ``close()`` included.
* :meth:`Connection.close` is synchronous: it records the close code and wakes the
  supervisor, which stops the reader, lets the sender finish what is queued (a slow
  consumer's queue is dropped instead) and sends the close frame, all within
  ``CLOSE_TIMEOUT_S``; then it cancels the sender. A stuck peer never gets the close frame:
  its transport is left to uvicorn, bounded by the transport's write buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketDisconnect

log = logging.getLogger("playground_rt.hub.fanout")

CLOSE_TIMEOUT_S = 1.0
FRAME_RATE = 50.0
"""Client frames per second a socket may sustain (token bucket refill)."""
FRAME_BURST = 100.0
"""Client frames a socket may send at once before the rate applies."""
STRIKES_TO_CLOSE = 50
"""Consecutive frames refused by the rate limit before the socket is closed."""


class Close(enum.IntEnum):
    """Close codes the hub uses (``docs/protocol.md``, "Close codes")."""

    NORMAL = 1000  # the client closed, or the hub has nothing more to say
    INTERNAL_ERROR = 1011  # a bug in the hub (logged with its traceback)
    TRY_AGAIN_LATER = 1013  # ws_max_connections sockets are open
    UNAUTHORIZED = 4001  # token required and missing or wrong
    ORIGIN_DENIED = 4003  # sent before accept: uvicorn answers the handshake with 403
    SLOW_CONSUMER = 4008  # outbox overflowed or a send outlived ws_send_timeout_s
    TOO_BIG = 4009  # a client frame over ws_max_frame_bytes
    NO_PING = 4012  # nothing received for two heartbeat intervals
    FLOOD = 4029  # the frame rate limit was ignored
    SHUTTING_DOWN = 4500  # the hub stops: reconnect (and resume) elsewhere or later


class Droppable(str):
    """An encoded frame that may be dropped when the socket's queue is full."""

    __slots__ = ()


class _Mark(str):
    __slots__ = ()


_MARK = _Mark()
"""Where :meth:`Connection.release` puts a held reply."""
_PAGE = _Mark("page")
"""Where the next of :attr:`Connection.pages` is sent, frame by frame."""


class TokenBucket:
    def __init__(self, rate: float = FRAME_RATE, burst: float = FRAME_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()
        self.strikes = 0

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            self.strikes = 0
            return True
        self.strikes += 1
        return False


class Connection:
    def __init__(
        self, websocket: WebSocket, send: Send, limit: int, dropped: Callable[[str, int], None]
    ) -> None:
        self.ws = websocket
        self._send = send
        """The socket's raw ASGI ``send``, for frames (``ws`` does everything else)."""
        self.limit = limit
        self._dropped = dropped
        self.queue: deque[str] = deque()
        self.pages: deque[Iterator[str]] = deque()
        """Replays queued by :meth:`page`, one ``_PAGE`` mark in ``queue`` each."""
        self.keys: set[str] = set()
        """Subscriptions: ``t:<taskId>``, ``j:<job_id>``, ``c:<channel>``."""
        self.live_since: int | None = None
        """The hub's seq when this socket first subscribed (resume skips what it got live)."""
        self.bucket = TokenBucket()
        now = time.monotonic()
        self.last_received = now
        self.last_heartbeat = now
        self.sending_since: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.peer_closed = False
        self.closing = False
        self._held = False
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._done = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self.closing

    # --- outbox (synchronous) --------------------------------------------------------------

    def offer(self, text: str) -> bool:
        """Queue one encoded frame (a :class:`Droppable` may be dropped); False when it was
        dropped or the socket is closing."""
        waiting = len(self.queue) - len(self.pages)  # a replay's mark is not a frame
        if self.closing or (waiting >= self.limit and not self._make_room(text)):
            return False
        self.queue.append(text)
        self._wake.set()
        return True

    def _make_room(self, text: str) -> bool:
        if isinstance(text, Droppable):
            self._dropped("queue_full", 1)
            return False
        for index, item in enumerate(self.queue):
            if isinstance(item, Droppable):
                del self.queue[index]
                self._dropped("queue_full", 1)
                return True
        self.close(Close.SLOW_CONSUMER, f"slow consumer: more than {self.limit} frames waiting")
        return False

    def page(self, frames: Iterator[str]) -> None:
        """Queue ``frames`` (encoded lazily, as the sender reaches them) after what is
        queued now and before what is offered later, outside the outbox limit."""
        if self.closing:
            return
        self.pages.append(frames)
        self.queue.append(_PAGE)
        self._wake.set()

    def hold(self) -> None:
        """Hold frames queued from now on; :meth:`release` puts ``text`` before them.

        So a reply whose seq was taken at ``hold`` time goes out before frames that its
        own request caused (a ``submit`` answered from the cache emits ``completed`` before
        the ``ack`` could be written), and the socket's seq stays increasing.
        """
        assert not self._held, "one hold at a time"
        self._held = True
        self.queue.append(_MARK)

    def release(self, text: str) -> None:
        self._held = False
        for index, item in enumerate(self.queue):
            if item is _MARK:
                self.queue[index] = text
                break
        self._wake.set()

    def close(self, code: int, reason: str) -> None:
        """Close (or evict): idempotent, never blocks; the supervisor does the rest.

        What is queued still goes out first (for at most ``CLOSE_TIMEOUT_S``), except for a
        slow consumer, whose queue is dropped.
        """
        if self.closing:
            return
        self.closing = True
        self.close_code, self.close_reason = code, reason
        if code == Close.SLOW_CONSUMER and self.queue:
            self._dropped("evicted", len(self.queue) - len(self.pages))
            self.queue.clear()
            self.pages.clear()
        self._done.set()

    # --- tasks -----------------------------------------------------------------------------

    async def run(self, reader: Callable[[Connection], Coroutine[Any, Any, None]]) -> None:
        """Run ``reader(self)`` and the sender until either ends or :meth:`close` is called."""
        read = asyncio.create_task(reader(self), name="ws-read")
        send = asyncio.create_task(self._send_loop(), name="ws-send")
        for task in (read, send):
            task.add_done_callback(self._task_done)
        try:
            await self._done.wait()
            read.cancel()
            if self.close_code is not None and not self.peer_closed:
                with contextlib.suppress(TimeoutError, OSError, WebSocketDisconnect):
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        await self._idle.wait()  # the queue went out
                        await self.ws.close(self.close_code, self.close_reason)
        finally:
            for task in (read, send):
                task.cancel()
            await asyncio.gather(read, send, return_exceptions=True)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            if task.get_name() == "ws-send" and isinstance(exc, WebSocketDisconnect | OSError):
                self.peer_closed = True  # the peer went away under a send
            else:
                log.error("%s failed", task.get_name(), exc_info=exc)
                self.close(Close.INTERNAL_ERROR, "internal error")
        self.closing = True
        self._done.set()

    async def _send_loop(self) -> None:
        queue, wake, send = self.queue, self._wake, self._send
        message: dict[str, Any] = {"type": "websocket.send", "text": ""}  # one per socket
        while True:
            if not queue or queue[0] is _MARK:
                self._idle.set()
                wake.clear()
                await wake.wait()
                continue
            self._idle.clear()
            text = queue.popleft() if queue[0] is not _PAGE else self._next_paged()
            if text is None:
                continue
            message["text"] = text
            self.sending_since = time.monotonic()
            await send(message)
            self.sending_since = None

    def _next_paged(self) -> str | None:
        """The next frame of the replay at the head of the queue; None when it is over
        (its mark is then gone)."""
        text = next(self.pages[0], None)
        if text is None:
            self.pages.popleft()
            self.queue.popleft()
        return text
