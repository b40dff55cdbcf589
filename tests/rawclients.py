"""Clients that misbehave on purpose, below what ``httpx`` and ``websockets`` let one do:
raw HTTP requests with lying headers, and a WebSocket that writes hand-made frames
(unmasked, reserved opcodes, invalid UTF-8, oversized control frames, fragments)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


def host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None, url
    return parts.hostname, parts.port


async def raw_http(url: str, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send ``request`` as is; the status and the body of the answer (read to EOF)."""
    host, port = host_port(url)
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return int(head.split(b" ", 2)[1]), body


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, masked: bool = True
) -> bytes:
    """One WebSocket frame as a client would write it (RFC 6455 §5.2), rules optional."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = bytes([first, mask_bit | n])
    elif n < 1 << 16:
        header = bytes([first, mask_bit | 126]) + struct.pack(">H", n)
    else:
        header = bytes([first, mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


@dataclass
class RawSocket:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    async def next_frame(self) -> tuple[int, bytes]:
        """The next server frame (servers never mask) as ``(opcode, payload)``."""
        b0, b1 = await self.reader.readexactly(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack(">H", await self.reader.readexactly(2))
        elif n == 127:
            (n,) = struct.unpack(">Q", await self.reader.readexactly(8))
        return b0 & 0x0F, await self.reader.readexactly(n)

    async def close_code(self, timeout: float = 10) -> int | None:
        """Read until the server's close frame; its code (None: the TCP stream just ended)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    opcode, payload = await self.next_frame()
                except (asyncio.IncompleteReadError, ConnectionError):
                    return None
                if opcode == CLOSE:
                    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005


@contextlib.asynccontextmanager
async def raw_socket(
    ws_url: str, headers: dict[str, str] | None = None
) -> AsyncIterator[RawSocket]:
    """A handshaken WebSocket on a bare TCP stream; closed on exit."""
    host, port = host_port(ws_url)
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    path = urlsplit(ws_url).path or "/"
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        yield RawSocket(reader, writer)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
