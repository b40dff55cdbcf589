"""``/ws``: who may open a socket, and what its client frames do.

Admission comes first: the ``Origin`` (``hosts``), the token (``auth``) and the socket cap,
each refused with its close code (``docs/protocol.md``); an admitted socket joins the hub.

Every client frame gets exactly one answer: ``ping`` a ``pong``, anything else an ``ack``
or an ``error`` (``ref`` echoed). A frame that cannot be decoded gets an ``error`` and the
socket stays open; a frame over ``ws_max_frame_bytes`` closes it (4009), and so does a
client that keeps sending past the rate limit (4029). Frames of one socket are handled one
at a time, in order: a slow ``submit`` holds back that socket's next frames only (uvicorn
stops reading the socket meanwhile, which is the backpressure a flood deserves).
"""

from __future__ import annotations

import functools
import logging
import time
import uuid

import msgspec
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from playground_rt import errors, schemas
from playground_rt.config import Settings
from playground_rt.hub.connection import STRIKES_TO_CLOSE, Close, Connection
from playground_rt.hub.fanout import Hub
from playground_rt.jobs.manager import JobManager
from playground_rt.web import auth, withdrawals
from playground_rt.web.hosts import HostPolicy

log = logging.getLogger("playground_rt.web.ws")

INTERNAL = "internal error while handling this frame (logged on the server)"
_decoder = msgspec.json.Decoder(schemas.ClientFrame)


class _Ref(msgspec.Struct):
    ref: str | None = None


_ref_decoder = msgspec.json.Decoder(_Ref)


class Endpoint:
    """``/ws`` as a raw ASGI app: Starlette then hands it the raw ``send``, which each
    socket's sender task calls directly (one layer of per-frame checks less on the hot
    path); everything else goes through Starlette's ``WebSocket``."""

    def __init__(self, hub: Hub, jobs: JobManager, settings: Settings) -> None:
        self.hub = hub
        self.jobs = jobs
        self.settings = settings
        self.hosts = HostPolicy.from_settings(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.serve(WebSocket(scope, receive, send), send)

    async def serve(self, websocket: WebSocket, send: Send) -> None:
        """Admit (Origin, token, socket cap), then serve until either side closes."""
        headers = websocket.headers
        if not self.hosts.allows_origin(headers.get("origin"), headers.get("host")):
            await websocket.close(Close.ORIGIN_DENIED)  # before accept: uvicorn answers 403
            return
        refusal = self._refusal(websocket)
        if refusal is not None:
            try:
                await websocket.accept()
                await websocket.close(*refusal)
            except (OSError, WebSocketDisconnect):
                pass
            return
        conn = self.hub.attach(websocket, send)
        try:
            await websocket.accept()
            await conn.run(functools.partial(read_loop, self.hub, self.jobs))
        except (OSError, WebSocketDisconnect):
            pass
        finally:
            self.hub.detach(conn)

    def _refusal(self, websocket: WebSocket) -> tuple[int, str] | None:
        if not auth.authorized(websocket, self.settings.token):
            return Close.UNAUTHORIZED, "missing or wrong token"
        if self.hub.full:
            return Close.TRY_AGAIN_LATER, "too many sockets; try again later"
        return None


async def read_loop(hub: Hub, jobs: JobManager, conn: Connection) -> None:
    """Until the peer closes or a frame closes the socket."""
    limit = hub.settings.ws_max_frame_bytes
    while True:
        message = await conn.ws.receive()
        if message["type"] == "websocket.disconnect":
            conn.peer_closed = True
            return
        conn.last_received = time.monotonic()
        data: str | bytes = message.get("text") or message.get("bytes") or b""
        if (size := _size(data, limit)) > limit:
            conn.close(Close.TOO_BIG, f"frame of {size} bytes exceeds ws_max_frame_bytes={limit}")
            return
        if not conn.bucket.take():
            if conn.bucket.strikes >= STRIKES_TO_CLOSE:
                conn.close(Close.FLOOD, "too many frames: rate limit ignored")
                return
            if conn.bucket.strikes == 1:
                hub.reply(conn, _error("rate limit: frames are being dropped", "rate_limited"))
            continue
        await dispatch(hub, jobs, conn, data)


async def dispatch(hub: Hub, jobs: JobManager, conn: Connection, data: str | bytes) -> None:
    try:
        frame = _decoder.decode(data)
    except errors.UNDECODABLE as exc:
        error = errors.undecodable(exc, "frame")
        if isinstance(error, errors.InvalidParams):  # a frame's own code, and its ref
            hub.reply(conn, _error(f"invalid frame: {exc}", "invalid_frame", _ref(data)))
        else:
            hub.reply(conn, _error(error.detail, error.code))
        return
    try:
        await handle(hub, jobs, conn, frame)
    except errors.PlaygroundError as exc:
        hub.reply(conn, _error(exc.detail, exc.code, frame.ref))
    except Exception:  # a bug, not the client's fault: log it, answer, keep the socket
        log.exception("handling a %s frame failed", frame.__struct_config__.tag)
        hub.reply(conn, _error(INTERNAL, "internal", frame.ref))


async def handle(hub: Hub, jobs: JobManager, conn: Connection, frame: schemas.ClientFrame) -> None:
    match frame:
        case schemas.Ping():
            hub.reply(conn, schemas.Pong(ref=frame.ref))
            return
        case schemas.Submit():
            await submit(hub, jobs, conn, frame)  # answers itself
            return
        case schemas.Subscribe():
            hub.subscribe(conn, _keys(frame))
        case schemas.Unsubscribe():
            hub.unsubscribe(conn, _keys(frame))
        case schemas.Cancel():
            await withdrawals.cancel(hub, jobs, conn, frame.job_id, frame.taskId)
        case schemas.TelemetryIn():
            hub.telemetry.client_report(_report(frame))
        case schemas.Resume():
            await hub.resume(conn, frame)
    hub.reply(conn, schemas.Ack(ref=frame.ref))


async def submit(hub: Hub, jobs: JobManager, conn: Connection, frame: schemas.Submit) -> None:
    """Prepare, subscribe, submit; the ack goes out before any frame of the job.

    Subscribing *before* ``jobs.submit`` is what gets this socket the ``completed`` frame
    of a cache hit (emitted inside ``submit``), exactly once; holding the socket's queue
    puts the ack, whose seq is taken first, ahead of it.
    """
    task_id = frame.taskId or f"ws-{uuid.uuid4().hex}"
    prepared = await jobs.prepare(frame)
    added = hub.subscribe(conn, {"t:" + task_id, "j:" + prepared.job_id})
    reply: schemas.Ack | schemas.Error
    seq = hub.next_seq()
    conn.hold()
    try:
        client = conn.ws.client.host if conn.ws.client else None
        sub = await jobs.submit(prepared, frame.mode, task_id, client)
        reply = schemas.Ack(
            ref=frame.ref,
            job_id=sub.job.id,
            taskId=task_id,
            cache_key=prepared.cache_key,
            routed_backend=sub.job.routed_backend,
        )
    except errors.PlaygroundError as exc:
        hub.unsubscribe(conn, added)
        reply = _error(exc.detail, exc.code, frame.ref)
    except Exception:  # a bug: the held queue must be released all the same
        log.exception("submit failed")
        hub.unsubscribe(conn, added)
        reply = _error(INTERNAL, "internal", frame.ref)
    reply.seq, reply.epoch = seq, hub.epoch
    conn.release(hub.encode(reply))
    hub.count(reply, 1)


# --- helpers ------------------------------------------------------------------------------


def _error(detail: str, code: str, ref: str | None = None) -> schemas.Error:
    return schemas.Error(detail=detail, code=code, ref=ref)


def _size(data: str | bytes, limit: int) -> int:
    """The frame's size in bytes (a str is only encoded when it might exceed ``limit``)."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode())


def _ref(data: str | bytes) -> str | None:
    """The ``ref`` of a frame that failed validation, when it can be read at all."""
    try:
        ref = _ref_decoder.decode(data).ref
    except errors.UNDECODABLE:
        return None
    return ref[:64] if ref else None


def _keys(frame: schemas.Subscribe | schemas.Unsubscribe) -> set[str]:
    keys = set()
    if frame.taskId is not None:
        keys.add("t:" + frame.taskId)
    if frame.job_id is not None:
        keys.add("j:" + frame.job_id)
    if frame.channel is not None:
        keys.add("c:" + frame.channel)
    if not keys:
        raise errors.BadRequest(f"{frame.__struct_config__.tag} needs taskId, job_id or channel")
    return keys


def _report(frame: schemas.TelemetryIn) -> schemas.MetricsReport:
    """The frame as a plain report: reports are re-broadcast, without ``type`` and ``ref``."""
    fields = schemas.MetricsReport.__struct_fields__
    return schemas.MetricsReport(**{name: getattr(frame, name) for name in fields})
