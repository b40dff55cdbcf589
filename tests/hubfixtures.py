"""WebSocket clients for the hub's tests: one that decodes and keeps every frame, and a
stuck one that never reads; request frames no other test sends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from playground_rt import schemas

from .conftest import b64, encode, poll, sample_image

F = TypeVar("F", bound=schemas.ServerFrame)
JOB_FRAMES = (
    schemas.Queued,
    schemas.Progress,
    schemas.Completed,
    schemas.Failed,
    schemas.Cancelled,
)
_decoder = msgspec.json.Decoder(schemas.ServerFrame)
_seeds = itertools.count(1000)
_refs = itertools.count(1)


def unique_png(size: tuple[int, int] = (40, 32)) -> str:
    """A small PNG (base64) no other test sends: no cache hit, no single-flight join."""
    return b64(encode(sample_image(*size, seed=next(_seeds))))


def rembg_submit(task_id: str | None = None, **extra: Any) -> dict[str, Any]:
    frame: dict[str, Any] = {
        "type": "submit",
        "mode": "fallback",
        "pipeline_id": "rembg",
        "params": {"strength": 0.85},
        "image_base64": unique_png(),
    }
    if task_id is not None:
        frame["taskId"] = task_id
    frame.update(extra)
    return frame


class Client:
    """A ``websockets`` client that decodes and keeps every frame it receives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[schemas.ServerFrame] = []
        self._new = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                self.frames.append(_decoder.decode(raw))
                self._new.set()
        except ConnectionClosed:
            pass
        finally:
            self._new.set()

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def send(self, frame: dict[str, Any] | str | bytes) -> None:
        await self.ws.send(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def wait_any(
        self, pred: Callable[[schemas.ServerFrame], bool], timeout: float = 30
    ) -> schemas.ServerFrame:
        """The first frame so far (or to come) matching ``pred``."""
        seen = 0
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for frame in self.frames[seen:]:
                        if pred(frame):
                            return frame
                    seen = len(self.frames)
                    if self._reader.done():
                        raise AssertionError(f"closed ({self.close_code}) before a matching frame")
                    self._new.clear()
                    await self._new.wait()
        except TimeoutError:
            last = [type(f).__name__ for f in self.frames[-5:]]
            raise AssertionError(
                f"no matching frame after {timeout:g} s ({len(self.frames)} frames; last {last})"
            ) from None

    async def wait(
        self, kind: type[F], pred: Callable[[F], bool] = lambda f: True, timeout: float = 30
    ) -> F:
        """The first frame of type ``kind`` matching ``pred``."""
        frame = await self.wait_any(lambda f: isinstance(f, kind) and pred(f), timeout)
        assert isinstance(frame, kind)
        return frame

    async def request(self, frame: dict[str, Any]) -> schemas.Ack | schemas.Error | schemas.Pong:
        """Send ``frame`` with a fresh ``ref`` and return its answer."""
        ref = f"r{next(_refs)}"
        await self.send(dict(frame, ref=ref))
        answer = await self.wait_any(
            lambda f: isinstance(f, schemas.Ack | schemas.Error | schemas.Pong) and f.ref == ref
        )
        assert isinstance(answer, schemas.Ack | schemas.Error | schemas.Pong)
        return answer

    async def ack(self, frame: dict[str, Any]) -> schemas.Ack:
        answer = await self.request(frame)
        assert isinstance(answer, schemas.Ack), answer
        return answer

    async def barrier(self) -> None:
        """Every frame queued for this socket before now has arrived (one queue, FIFO)."""
        assert isinstance(await self.request({"type": "ping"}), schemas.Pong)

    def job_frames(self, job_id: str | None) -> list[schemas.JobFrame]:
        return [f for f in self.frames if isinstance(f, JOB_FRAMES) and f.job_id == job_id]

    async def closed(self, timeout: float = 10) -> int | None:
        """The close code, once the server closed the socket."""
        try:
            async with asyncio.timeout(timeout):
                await self._reader
        except TimeoutError:
            raise AssertionError(f"the socket still open after {timeout:g} s") from None
        return self.close_code

    async def aclose(self) -> None:
        await self.ws.close()
        await self._reader


@contextlib.asynccontextmanager
async def client(url: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with connect(url, proxy=None, open_timeout=10, **kwargs) as ws:
        c = Client(ws)
        try:
            yield c
        finally:
            c._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await c._reader


def client_frame(text: str) -> bytes:
    """A masked text frame, as a client must send it."""
    payload, mask = text.encode(), os.urandom(4)
    n = len(payload)
    if n < 126:
        header = bytes([0x81, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x81, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x81, 0x80 | 127]) + n.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def stuck_client(url: str, frames: list[dict[str, Any]]) -> socket.socket:
    """A client that does the handshake, sends ``frames`` and then never reads again.

    Its receive buffer is shrunk first, so the server's writes back up quickly.
    """
    host, port = url.removeprefix("http://").split(":")
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    answer = b""
    async with asyncio.timeout(10):
        while b"\r\n\r\n" not in answer:
            byte = await loop.sock_recv(sock, 1)  # one by one: read nothing past the headers
            assert byte, f"closed during the handshake: {answer!r}"
            answer += byte
    assert answer.startswith(b"HTTP/1.1 101"), answer
    for frame in frames:
        await loop.sock_sendall(sock, client_frame(json.dumps(frame)))
    return sock


async def until(condition: Callable[[], bool], timeout: float = 10, what: str = "") -> None:
    """Poll a server-side condition (no event to wait on from outside the app)."""

    async def check() -> bool:
        return condition()

    await poll(check, bool, what or "the condition", timeout, every=0.01)
