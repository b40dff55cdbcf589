"""The WebSocket hub: admission, subscriptions, fan-out, replay and heartbeats.

Frames (``docs/protocol.md``) are ``schemas`` Structs. A job frame from the job manager is
stamped once with the hub's next ``seq`` and its ``epoch``, kept in the replay buffer, and
encoded once per distinct ``taskId`` among its recipients; every recipient gets the same
``str``. A socket subscribed to a job by several keys (its taskId and its job_id) is one
recipient: it gets each frame once. :meth:`Hub.publish_job` is synchronous and only queues
(``connection``): no client is ever awaited, so one slow socket delays no other.

With ``settings.broker`` the frames this process produces also go to Redis and the frames of
the other processes come back from it (``broker``); every hub stamps what it delivers with
its *own* seq, so ``resume`` is exact against the same process and answers ``gap`` elsewhere.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import msgspec
from prometheus_client import Counter
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import errors, schemas
from .broker import CancelMessage, FrameMessage, Message, RedisBroker
from .config import Settings
from .connection import STRIKES_TO_CLOSE, Close, Connection
from .jobs import JobEvent, JobManager
from .replay import Entry, ReplayBuffer
from .telemetry import Telemetry

log = logging.getLogger("playground_rt.hub")

MAX_SUBSCRIPTIONS = 256
"""Keys (taskIds, job ids, channels) one socket may follow."""
BROKER_SCHEMES = ("redis", "rediss", "unix")

_decoder = msgspec.json.Decoder(schemas.ClientFrame)
_encoder = msgspec.json.Encoder()


class _Ref(msgspec.Struct):
    ref: str | None = None


_ref_decoder = msgspec.json.Decoder(_Ref)


class Hub:
    def __init__(self, settings: Settings, jobs: JobManager, telemetry: Telemetry) -> None:
        if settings.broker and urlsplit(settings.broker).scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"broker {settings.broker!r}: use a redis://, rediss:// or unix:// URL"
            )
        self.settings = settings
        self.jobs = jobs
        self.telemetry = telemetry
        self.epoch = secrets.token_hex(8)
        self.seq = 0
        self.replay = ReplayBuffer()
        self.connections: set[Connection] = set()
        self.broker: RedisBroker | None = None
        self._subs: dict[str, set[Connection]] = {}
        self._origins = {o.rstrip("/").lower() for o in settings.allowed_origins}
        self._frames: dict[str, Counter] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._broker_lost_at: int | None = None

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self.settings.broker:
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
        for conn in list(self.connections):
            conn.close(Close.SHUTTING_DOWN, "server shutting down; reconnect and resume")
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
        self._deliver(event.frame, event.task_ids)
        if self.broker is not None:
            self.broker.publish(FrameMessage(self.epoch, sorted(event.task_ids), event.frame))

    def _deliver(self, frame: schemas.JobFrame, task_ids: frozenset[str]) -> None:
        seq = self._next_seq()
        base = msgspec.structs.replace(frame, seq=seq, epoch=self.epoch, taskId=None)
        entry = Entry(seq, base, task_ids)
        self.replay.append(entry)
        recipients = self._recipients(entry)
        texts: dict[str | None, str] = {}
        for conn, task_id in recipients.items():
            text = texts.get(task_id)
            if text is None:
                text = texts[task_id] = _encode(_with_task(base, task_id))
            conn.offer(text, False)
        self._count(base, len(recipients))

    def _recipients(self, entry: Entry) -> dict[Connection, str | None]:
        found: dict[Connection, str | None] = {}
        for task_id in sorted(entry.task_ids):
            for conn in self._subs.get("t:" + task_id, ()):
                found.setdefault(conn, task_id)
        for conn in self._subs.get("j:" + entry.job_id, ()):
            found.setdefault(conn, None)
        return found

    def _broadcast(self, key: str, frame: schemas.ServerFrame, droppable: bool) -> None:
        conns = self._subs.get(key)
        if not conns:
            return
        text = _encode(self._stamp(frame))
        for conn in conns:
            conn.offer(text, droppable)
        self._count(frame, len(conns))

    def _reply(self, conn: Connection, frame: schemas.ServerFrame) -> None:
        conn.offer(_encode(self._stamp(frame)), False)
        self._count(frame, 1)

    def _stamp(self, frame: schemas.ServerFrame) -> schemas.ServerFrame:
        frame.seq, frame.epoch = self._next_seq(), self.epoch
        return frame

    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _count(self, frame: schemas.ServerFrame, n: int) -> None:
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
                    heartbeat = _encode(self._stamp(schemas.Pong()))
                conn.last_heartbeat = now
                conn.offer(heartbeat, True)

    def _telemetry(self, now: float) -> None:
        if self._subs.get("c:telemetry"):
            self._broadcast("c:telemetry", _redact(self.telemetry.snapshot()), droppable=True)

    # --- sockets ---------------------------------------------------------------------------

    async def endpoint(self, websocket: WebSocket) -> None:
        """``/ws``: admit (Origin, token, socket cap), then serve until either side closes."""
        if not self._origin_allowed(websocket):
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
        conn = Connection(websocket, self.settings.ws_send_queue, self._dropped)
        self.connections.add(conn)  # counted before the first await: the cap holds
        self.telemetry.ws_connections.inc()
        try:
            await websocket.accept()
            await conn.run(self._read_loop)
        except (OSError, WebSocketDisconnect):
            pass
        finally:
            conn.close(Close.NORMAL, "")
            self._unsubscribe(conn, set(conn.keys))
            self.connections.discard(conn)
            self.telemetry.ws_connections.dec()

    def _origin_allowed(self, websocket: WebSocket) -> bool:
        origin = websocket.headers.get("origin")
        if origin is None:  # not a browser: Origin protects browsers' ambient credentials
            return True
        origin = origin.rstrip("/").lower()
        if origin in self._origins or "*" in self._origins:
            return True
        return urlsplit(origin).netloc == websocket.headers.get("host", "").lower()

    def _refusal(self, websocket: WebSocket) -> tuple[int, str] | None:
        token = self.settings.token
        if token is not None:
            given = websocket.headers.get("authorization", "").removeprefix("Bearer ").strip()
            given = given or websocket.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return Close.UNAUTHORIZED, "missing or wrong token"
        if len(self.connections) >= self.settings.ws_max_connections:
            return Close.TRY_AGAIN_LATER, "too many sockets; try again later"
        return None

    async def _read_loop(self, conn: Connection) -> None:
        limit = self.settings.ws_max_frame_bytes
        while True:
            message = await conn.ws.receive()
            if message["type"] == "websocket.disconnect":
                conn.peer_closed = True
                return
            conn.last_received = time.monotonic()
            data: str | bytes = message.get("text") or message.get("bytes") or b""
            if (size := _size(data, limit)) > limit:
                conn.close(
                    Close.TOO_BIG, f"frame of {size} bytes exceeds ws_max_frame_bytes={limit}"
                )
                return
            if not conn.bucket.take():
                if conn.bucket.strikes >= STRIKES_TO_CLOSE:
                    conn.close(Close.FLOOD, "too many frames: rate limit ignored")
                    return
                if conn.bucket.strikes == 1:
                    self._reply(
                        conn,
                        schemas.Error(
                            detail="rate limit: frames are being dropped", code="rate_limited"
                        ),
                    )
                continue
            await self._dispatch(conn, data)

    async def _dispatch(self, conn: Connection, data: str | bytes) -> None:
        try:
            frame = _decoder.decode(data)
        except msgspec.ValidationError as exc:  # subclasses DecodeError: first
            self._reply(
                conn,
                schemas.Error(detail=f"invalid frame: {exc}", code="invalid_frame", ref=_ref(data)),
            )
            return
        except msgspec.DecodeError as exc:
            self._reply(
                conn, schemas.Error(detail=f"malformed JSON frame: {exc}", code="bad_request")
            )
            return
        try:
            await self._handle(conn, frame)
        except errors.PlaygroundError as exc:
            self._reply(conn, schemas.Error(detail=exc.detail, code=exc.code, ref=frame.ref))

    async def _handle(self, conn: Connection, frame: schemas.ClientFrame) -> None:
        """One client frame; every frame gets one answer (``ack``, ``pong`` or ``error``)."""
        match frame:
            case schemas.Ping():
                self._reply(conn, schemas.Pong(ref=frame.ref))
                return
            case schemas.Submit():
                await self._submit(conn, frame)  # answers itself
                return
            case schemas.Subscribe():
                self._subscribe(conn, _keys(frame))
            case schemas.Unsubscribe():
                self._unsubscribe(conn, _keys(frame))
            case schemas.Cancel():
                self._cancel(frame.job_id, frame.taskId, relay=True)
            case schemas.TelemetryIn():
                self.telemetry.client_report(_report(frame))
            case schemas.Resume():
                self._resume(conn, frame)
        self._reply(conn, schemas.Ack(ref=frame.ref))

    # --- subscriptions ---------------------------------------------------------------------

    def _subscribe(self, conn: Connection, keys: set[str]) -> set[str]:
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

    def _unsubscribe(self, conn: Connection, keys: set[str]) -> None:
        for key in keys & conn.keys:
            conn.keys.discard(key)
            subscribers = self._subs.get(key)
            if subscribers is not None:
                subscribers.discard(conn)
                if not subscribers:
                    del self._subs[key]

    # --- client frames ---------------------------------------------------------------------

    async def _submit(self, conn: Connection, frame: schemas.Submit) -> None:
        """Prepare, subscribe, submit; the ack goes out before any frame of the job.

        Subscribing *before* ``jobs.submit`` is what gets this socket the ``completed``
        frame of a cache hit (emitted inside ``submit``) exactly once; holding the socket's
        queue puts the ack (seq taken first) ahead of it.
        """
        task_id = frame.taskId or f"ws-{uuid.uuid4().hex}"
        prepared = await self.jobs.prepare(frame)
        added = self._subscribe(conn, {"t:" + task_id, "j:" + prepared.job_id})
        reply: schemas.Ack | schemas.Error
        seq = self._next_seq()
        conn.hold()
        try:
            sub = await self.jobs.submit(prepared, frame.mode, task_id)
            reply = schemas.Ack(
                ref=frame.ref,
                job_id=sub.job.id,
                taskId=task_id,
                cache_key=prepared.cache_key,
                routed_backend=sub.job.routed_backend,
            )
        except errors.PlaygroundError as exc:
            self._unsubscribe(conn, added)
            reply = schemas.Error(detail=exc.detail, code=exc.code, ref=frame.ref)
        reply.seq, reply.epoch = seq, self.epoch
        conn.release(_encode(reply))
        self._count(reply, 1)

    def _cancel(self, job_id: str | None, task_id: str | None, relay: bool) -> None:
        """Withdraw ``task_id``'s interest (every interest without one) in the job(s).

        Jobs run by another process get the cancel through the broker.
        """
        if job_id is None and task_id is None:
            raise errors.BadRequest("cancel needs job_id or taskId")
        active = self.jobs.active
        if job_id is not None:
            targets = [job_id] if job_id in active else []
        else:
            targets = [j.id for j in active.values() if task_id in j.interests]
        for target in targets:
            self.jobs.cancel(target, task_id)
        if not relay or targets:
            return
        if self.broker is not None and self.broker.connected.is_set():
            self.broker.publish(CancelMessage(self.epoch, job_id, task_id))
        elif job_id is not None:
            self.jobs.get(job_id)  # UnknownJob unless it already finished here

    def _resume(self, conn: Connection, frame: schemas.Resume) -> None:
        before = frozenset(conn.keys)
        self._subscribe(conn, {"t:" + t for t in frame.taskIds} | {"j:" + j for j in frame.job_ids})
        same = frame.epoch == self.epoch or (frame.epoch is None and frame.last_seq == 0)
        start = frame.last_seq if same else 0
        for entry in self.replay.after(start):
            wanted, task_id = entry.match(conn.keys)
            if not wanted:
                continue
            if (
                conn.live_since is not None
                and entry.seq >= conn.live_since
                and entry.match(before)[0]
            ):
                continue  # already delivered live to this socket
            conn.offer(_encode(_with_task(entry.frame, task_id)), False)
        if not same or frame.last_seq < self.replay.dropped_upto:
            detail = "another epoch (the server restarted)" if not same else "frames were discarded"
            self._reply(conn, self._gap(frame.last_seq, f"{detail}; refetch job state over REST"))

    def _gap(self, from_seq: int, detail: str) -> schemas.Gap:
        oldest = self.replay.oldest_seq(self.seq + 1)
        return schemas.Gap(from_seq=from_seq, oldest_seq=oldest, detail=detail)

    # --- broker ----------------------------------------------------------------------------

    def _on_broker(self, message: Message) -> None:
        if isinstance(message, FrameMessage):
            self._deliver(message.frame, frozenset(message.task_ids))
        else:
            self._cancel(message.job_id, message.task_id, relay=False)

    def _on_broker_state(self, connected: bool) -> None:
        if not connected:
            self._broker_lost_at = self.seq
            return
        if self._broker_lost_at is None:
            return
        detail = (
            "the broker reconnected: frames from other processes may be missing; refetch job state"
        )
        for conn in self.connections:
            if any(not key.startswith("c:") for key in conn.keys):
                self._reply(conn, self._gap(self._broker_lost_at, detail))
        self._broker_lost_at = None


# --- helpers ------------------------------------------------------------------------------


def _encode(frame: schemas.ServerFrame) -> str:
    return _encoder.encode(frame).decode()


def _with_task(frame: schemas.JobFrame, task_id: str | None) -> schemas.JobFrame:
    return frame if task_id is None else msgspec.structs.replace(frame, taskId=task_id)


def _size(data: str | bytes, limit: int) -> int:
    """The frame's size in bytes (a str is only encoded when it might exceed ``limit``)."""
    if isinstance(data, bytes) or len(data) * 4 <= limit:
        return len(data)
    return len(data.encode())


def _ref(data: str | bytes) -> str | None:
    """The ``ref`` of a frame that failed validation, when it can be read at all."""
    try:
        ref = _ref_decoder.decode(data).ref
    except msgspec.DecodeError:
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
    return schemas.MetricsReport(
        source=frame.source,
        taskId=frame.taskId,
        queue_depth=frame.queue_depth,
        running=frame.running,
        workers=frame.workers,
        durations_ms=frame.durations_ms,
    )


def _redact(frame: schemas.Telemetry) -> schemas.Telemetry:
    """Telemetry goes to every ``telemetry`` subscriber: never show them a taskId."""
    clients = {}
    for key, report in frame.clients.items():
        if report.taskId is not None:
            digest = hashlib.blake2b(key.encode(), digest_size=6).hexdigest()
            key, report = f"{report.source}:{digest}", msgspec.structs.replace(report, taskId=None)
        clients[key] = report
    frame.clients = clients
    return frame
