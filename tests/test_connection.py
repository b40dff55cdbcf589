"""One socket's outbox used alone (``hub/connection.py``): bounded, never awaited by the
hub, one sender task. The ASGI server's side of the socket is played in memory by
:class:`Peer`, the way uvicorn would hand messages to the client; no server, no network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.websockets import WebSocket

from playground_rt.hub.connection import Close, Connection, Droppable

SCOPE: dict[str, Any] = {
    "type": "websocket",
    "path": "/ws",
    "query_string": b"",
    "headers": [],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
    "scheme": "ws",
    "subprotocols": [],
}


class Peer:
    """The server's end of one socket: every message the app sends, in order; ``reading``
    cleared, a send waits as it does when the client stops reading."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.reading = asyncio.Event()
        self.reading.set()
        self.sending = asyncio.Event()
        """Set once a send is waiting on the client."""
        self._incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._incoming.put_nowait({"type": "websocket.connect"})

    async def receive(self) -> dict[str, Any]:
        return await self._incoming.get()

    async def send(self, message: dict[str, Any]) -> None:
        if not self.reading.is_set():
            self.sending.set()
            await self.reading.wait()
        self.sent.append(dict(message))  # the sender reuses one dict per socket

    def texts(self) -> list[str]:
        return [m["text"] for m in self.sent if m["type"] == "websocket.send"]

    def closes(self) -> list[tuple[int, str]]:
        return [(m["code"], m["reason"]) for m in self.sent if m["type"] == "websocket.close"]


class Outbox:
    """A :class:`Connection` on a :class:`Peer`, and what it reported dropped."""

    def __init__(self, limit: int) -> None:
        self.peer = Peer()
        self.dropped: list[tuple[str, int]] = []
        websocket = WebSocket(SCOPE, self.peer.receive, self.peer.send)  # type: ignore[arg-type]
        self.conn = Connection(
            websocket,
            self.peer.send,  # type: ignore[arg-type]
            limit,
            lambda reason, count: self.dropped.append((reason, count)),
        )


async def silent(conn: Connection) -> None:
    """A client that sends nothing: only the sender and ``close`` end the connection."""
    await asyncio.Event().wait()


@asynccontextmanager
async def sending(limit: int = 4) -> AsyncIterator[Outbox]:
    """An accepted socket whose sender runs; on exit, the connection has ended."""
    outbox = Outbox(limit)
    await outbox.conn.ws.accept()
    task = asyncio.create_task(outbox.conn.run(silent))
    try:
        yield outbox
    finally:
        outbox.conn.close(Close.NORMAL, "bye")
        await asyncio.wait_for(task, timeout=5)


def test_a_full_outbox_drops_droppable_frames_first_then_closes_a_slow_consumer() -> None:
    outbox = Outbox(limit=2)
    conn = outbox.conn
    assert conn.offer(Droppable('{"type":"heartbeat"}')) and conn.offer("progress 1")
    assert conn.offer("progress 2")  # takes the heartbeat's place
    assert list(conn.queue) == ["progress 1", "progress 2"]
    assert not conn.offer(Droppable('{"type":"telemetry"}'))  # dropped, the socket stays
    assert outbox.dropped == [("queue_full", 1), ("queue_full", 1)] and not conn.closing

    assert not conn.offer("progress 3")  # nothing left to drop: the client is too slow
    assert conn.closing and conn.close_code == Close.SLOW_CONSUMER
    assert "more than 2 frames waiting" in conn.close_reason
    assert not conn.queue and outbox.dropped[-1] == ("evicted", 2)
    assert not conn.offer("progress 4")


async def test_what_is_queued_goes_out_in_order_then_the_close_frame() -> None:
    async with sending() as outbox:
        for text in ("queued", "progress", "completed"):
            outbox.conn.offer(text)
    assert outbox.peer.texts() == ["queued", "progress", "completed"]
    assert outbox.peer.closes() == [(1000, "bye")]


async def test_a_held_reply_goes_out_before_what_its_request_caused() -> None:
    """A ``submit`` answered from the cache: ``completed`` is emitted before the ``ack``
    is written, yet the client reads the ``ack`` first."""
    async with sending() as outbox:
        outbox.conn.hold()
        outbox.conn.offer("completed")
        outbox.conn.release("ack")
    assert outbox.peer.texts() == ["ack", "completed"]


async def test_a_replay_of_any_length_goes_out_in_its_place_outside_the_limit() -> None:
    pulled: list[int] = []

    def replay() -> Iterator[str]:
        for seq in range(1, 6):
            pulled.append(seq)
            yield f"replayed {seq}"

    async with sending(limit=3) as outbox:
        outbox.peer.reading.clear()  # the client reads nothing until the test has queued it all
        outbox.conn.offer("before")
        await asyncio.wait_for(outbox.peer.sending.wait(), timeout=5)  # "before" is on its way
        outbox.conn.page(replay())
        for text in ("after", "after, too", "last"):
            assert outbox.conn.offer(text)  # 3 frames waiting: the replay's 5 do not count
        assert pulled == []  # made as the sender reaches them, not when queued
        outbox.peer.reading.set()
    assert outbox.peer.texts() == [
        "before",
        *(f"replayed {seq}" for seq in range(1, 6)),
        "after",
        "after, too",
        "last",
    ]


async def test_a_send_stuck_on_the_client_shows_when_it_started_and_close_never_waits() -> None:
    outbox = Outbox(limit=4)
    conn = outbox.conn
    await conn.ws.accept()
    outbox.peer.reading.clear()  # the client stops reading
    task = asyncio.create_task(conn.run(silent))
    conn.offer("progress")
    await asyncio.wait_for(outbox.peer.sending.wait(), timeout=5)
    assert conn.sending_since is not None  # what the hub's sweep evicts on
    conn.offer("completed")
    conn.close(Close.SLOW_CONSUMER, "slow consumer: a send took over 0.5 s")
    await asyncio.wait_for(task, timeout=5)  # within CLOSE_TIMEOUT_S, the send given up
    assert outbox.dropped == [("evicted", 1)]  # what was still queued
    assert outbox.peer.sent == [{"type": "websocket.accept", "subprotocol": None, "headers": []}]
