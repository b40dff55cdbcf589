"""Running the app under uvicorn: a shutdown that tells every client how its job ended,
deadlines on reading a request, and no secrets in the logs.

uvicorn's own shutdown closes WebSockets (1012) and waits for connections *before* the
lifespan teardown runs, so terminal frames sent from the teardown never arrive. This server
drains first: it stops listening, finishes every job with a terminal frame and closes the
sockets itself (4500, "reconnect and resume"); then uvicorn's shutdown runs as usual.

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a
request takes to *arrive*: a client dripping a header line or a body byte every few seconds
holds its connection (and a file descriptor) forever. :class:`DeadlineH11Protocol` closes a
connection whose request head is not complete within ``http_header_timeout_s``, or whose
body is not within ``http_body_timeout_s`` of its head; ``api.read_body`` enforces the body
deadline for the bodies the app reads, answering 408.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any, Literal
from urllib.parse import unquote_plus

import h11
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.h11_impl import H11Protocol

from playground_rt.config import Settings
from playground_rt.web.state import AppState

Phase = Literal["head", "body"]
_TIMEOUT_ANSWER = b'{"detail":"request head not received in time","code":"request_timeout"}'


class Server(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        app = self.config.app
        state: AppState | None = (
            getattr(app.state, "playground", None) if isinstance(app, Starlette) else None
        )
        if state is not None and not self.force_exit:
            await state.drain()
        await super().shutdown(sockets)


class DeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request's head and body.

    The deadline follows h11's view of the client: waiting for a head (``IDLE``, from the
    connection or the previous answer on), or for the rest of a body (``SEND_BODY``). While
    the app answers (the client is ``DONE``) nothing is timed. A body deadline that passes
    while the app is still answering is the app's to handle (``api.read_body``) and is
    enforced when its answer is complete. An upgraded connection (``/ws``) is untimed.
    """

    header_timeout_s = 10.0
    body_timeout_s = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._upgraded = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        self._upgraded = True
        self._stop()
        super().handle_websocket_upgrade(event)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _watch(self) -> None:
        if self._upgraded or self.transport.is_closing():
            self._stop()
            return
        their = self.conn.their_state
        phase: Phase | None = "head" if their is h11.IDLE else None
        if their is h11.SEND_BODY:
            phase = "body"
        if phase == self._phase:
            if phase is not None and self._timer is None:
                self._expire()  # its time passed while the app was answering
            return
        self._stop()
        self._phase = phase
        if phase is not None:
            timeout = self.header_timeout_s if phase == "head" else self.body_timeout_s
            self._timer = self.loop.call_later(timeout, self._expire)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _expire(self) -> None:
        self._timer = None
        if self._upgraded or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # the app is answering: checked again when it is done (_watch)
        if self._phase == "head" and self.conn.trailing_data[0]:  # a head had begun
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
                % (len(_TIMEOUT_ANSWER), _TIMEOUT_ANSWER)
            )
        self.logger.debug("%s: request %s too slow, connection closed", self.client, self._phase)
        self.transport.close()


def deadline_protocol(header_timeout_s: float, body_timeout_s: float) -> type[H11Protocol]:
    class Protocol(DeadlineH11Protocol):
        pass

    Protocol.header_timeout_s, Protocol.body_timeout_s = header_timeout_s, body_timeout_s
    return Protocol


class RedactToken(logging.Filter):
    """Replaces the value of a ``token`` query parameter in uvicorn's log records (the
    access log's path, the ``"WebSocket /ws?token=..."`` lines) with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg)
        return True


def _redact(text: str) -> str:
    path, mark, query = text.partition("?")
    if not mark or "=" not in query:
        return text
    params = query.split("&")
    for index, param in enumerate(params):
        name, equals, _ = param.partition("=")
        if equals and unquote_plus(name).strip().lower() == "token":
            params[index] = name + "=***"
    return path + mark + "&".join(params)


REDACT_TOKEN = RedactToken()


def redact_logs() -> None:
    """Install :class:`RedactToken` on uvicorn's loggers (idempotent; after uvicorn's own
    logging set-up, which keeps logger filters)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if REDACT_TOKEN not in logger.filters:
            logger.addFilter(REDACT_TOKEN)


def config(settings: Settings, app: Starlette, *, log_level: str | None = None) -> uvicorn.Config:
    result = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=deadline_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s),
        ws=settings.ws_impl,
        # Above the hub's own limit, so an oversize frame gets the hub's 4009 and a reason.
        ws_max_size=4 * settings.ws_max_frame_bytes,
        ws_ping_interval=settings.ws_ping_interval_s,
        # Browsers always offer permessage-deflate; it would compress every frame again per
        # socket and defeat the hub's encode-once fan-out.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
        log_level=log_level or settings.log_level,
        proxy_headers=False,
        lifespan="on",
    )
    redact_logs()
    return result
