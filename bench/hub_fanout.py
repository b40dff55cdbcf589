"""Hub fan-out against a bare ``websockets.broadcast`` server, in the same run.

Each contender serves ``--sockets`` WebSocket clients held by a *separate* client process
(a minimal raw-socket client: it costs the server nothing a browser would not). Two phases:

* throughput: ``--frames`` frames published back to back (bursts of ``BURST``, yielding to
  the loop between bursts); frames/s = frames x sockets / (last arrival - first publish);
* latency: ``--latency-frames`` frames at ``--rate`` frames/s; p50/p99 of arrival - publish
  (CLOCK_MONOTONIC is one clock for every process of the machine).

The hub is the real thing: ``create_app`` under uvicorn, frames published through
``Hub.publish_job`` as ``progress`` frames of one job the clients subscribed to. The
baseline encodes the same frame and calls ``websockets.broadcast``. Run:
``python -m bench.hub_fanout [--quick]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

JOB = "rembg-" + "b" * 32
BURST = 64
Publish = Callable[[str, int], None]


# --- servers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def uvicorn_on(app: Any, ws_impl: str) -> AsyncIterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1 (OS-chosen port); yields ``host:port``."""
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, ws=ws_impl, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        await asyncio.sleep(0.01)
    try:
        yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def hub_server(ws_impl: str) -> AsyncIterator[tuple[str, Publish]]:
    from playground_rt.config import Settings
    from playground_rt.jobs.job import JobEvent
    from playground_rt.schemas import Progress
    from playground_rt.web.app import create_app

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_root=Path(tmp),
            outputs_root=Path(tmp),
            preload_models=[],
            pull_models=False,
            ws_send_queue=1 << 16,  # the baseline buffers without limit: no eviction here
            ws_send_timeout_s=60,
        )
        app = create_app(settings)

        def publish(phase: str, index: int) -> None:
            stage = f"{phase}:{time.monotonic():.6f}"
            frame = Progress(job_id=JOB, stage=stage, step=index, total=0)
            app.state.playground.hub.publish_job(JobEvent(frame, frozenset()))

        async with uvicorn_on(app, ws_impl) as address:
            yield address, publish


@contextlib.asynccontextmanager
async def bare_server() -> AsyncIterator[tuple[str, Publish]]:
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    from playground_rt.schemas import Progress

    connections: set[ServerConnection] = set()
    encoder = msgspec.json.Encoder()
    seq = 0

    async def handler(ws: ServerConnection) -> None:
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    def publish(phase: str, index: int) -> None:
        nonlocal seq
        seq += 1
        stage = f"{phase}:{time.monotonic():.6f}"
        frame = Progress(job_id=JOB, stage=stage, step=index, total=0, seq=seq, epoch="bare")
        broadcast(connections, encoder.encode(frame).decode())

    async with serve(handler, "127.0.0.1", 0, compression=None, max_queue=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"127.0.0.1:{port}", publish


@contextlib.asynccontextmanager
async def asgi_floor_server(ws_impl: str) -> AsyncIterator[tuple[str, Publish]]:
    """The same design with nothing else: a raw ASGI app under the same uvicorn, one
    sender task and queue per socket. What uvicorn's ASGI path itself costs per frame."""
    from playground_rt.schemas import Progress

    app = _FloorApp()
    encoder = msgspec.json.Encoder()

    def publish(phase: str, index: int) -> None:
        stage = f"{phase}:{time.monotonic():.6f}"
        frame = Progress(job_id=JOB, stage=stage, step=index, total=0, seq=index, epoch="asgi")
        text = encoder.encode(frame).decode()
        for outbox in app.outboxes:
            outbox.queue.append(text)
            outbox.wake.set()

    async with uvicorn_on(app, ws_impl) as address:
        yield address, publish


class _FloorApp:
    def __init__(self) -> None:
        self.outboxes: set[_Outbox] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await receive()
        await send({"type": "websocket.accept"})
        outbox = _Outbox()
        self.outboxes.add(outbox)
        pump = asyncio.create_task(_pump(outbox, send))
        try:
            while (await receive())["type"] != "websocket.disconnect":
                pass
        finally:
            pump.cancel()
            self.outboxes.discard(outbox)


class _Outbox:
    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.wake = asyncio.Event()


async def _pump(outbox: _Outbox, send: Any) -> None:
    queue, wake = outbox.queue, outbox.wake
    while True:
        if not queue:
            wake.clear()
            await wake.wait()
            continue
        await send({"type": "websocket.send", "text": queue.popleft()})


# --- the client process -------------------------------------------------------------------


class _Probe(msgspec.Struct):
    type: str
    stage: str = ""


_probe = msgspec.json.Decoder(_Probe)


class Stats:
    def __init__(self, expect: dict[str, int], sockets: int) -> None:
        self.expect, self.sockets = expect, sockets
        self.counts = {phase: 0 for phase in expect}
        self.first = {phase: float("inf") for phase in expect}
        self.last = {phase: 0.0 for phase in expect}
        self.latency: dict[str, list[float]] = {phase: [] for phase in expect}
        self.acks = 0
        self.changed = asyncio.Event()

    def frame(self, payload: bytes, now: float) -> None:
        probe = _probe.decode(payload)
        if probe.type == "ack":
            self.acks += 1
        elif probe.type == "progress":
            phase, stamp = probe.stage.split(":")
            sent = float(stamp)
            self.counts[phase] += 1
            self.first[phase] = min(self.first[phase], sent)
            self.last[phase] = max(self.last[phase], now)
            self.latency[phase].append(now - sent)
        self.changed.set()

    def complete(self, phase: str) -> bool:
        return self.counts[phase] >= self.expect[phase] * self.sockets


def _masked(text: str) -> bytes:
    payload, mask = text.encode(), os.urandom(4)
    assert len(payload) < 126
    return (
        bytes([0x81, 0x80 | len(payload)])
        + mask
        + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    )


class RawClient(asyncio.Protocol):
    """Handshake, then parse unmasked server frames; answers nothing but the handshake."""

    def __init__(self, host: str, stats: Stats, subscribe: bytes | None) -> None:
        self.host, self.stats, self.subscribe = host, stats, subscribe
        self.buffer = bytearray()
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /ws HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open.done():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            assert self.buffer.startswith(b"HTTP/1.1 101"), bytes(self.buffer[:200])
            del self.buffer[: end + 4]
            self.open.set_result(None)
            if self.subscribe and self.transport:
                self.transport.write(self.subscribe)
        self._frames(time.monotonic())

    def _frames(self, now: float) -> None:
        buf = self.buffer
        while len(buf) >= 2:
            size, offset = buf[1] & 0x7F, 2
            if size == 126:
                size, offset = int.from_bytes(buf[2:4], "big"), 4
            elif size == 127:
                size, offset = int.from_bytes(buf[2:10], "big"), 10
            if len(buf) < offset + size:
                return
            if buf[0] & 0x0F == 1:
                self.stats.frame(bytes(buf[offset : offset + size]), now)
            del buf[: offset + size]

    def ping(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked('{"type":"ping"}'))


async def client_main(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    host, port = args.client.split(":")
    stats = Stats({"t": args.frames, "l": args.latency_frames}, args.sockets)
    subscribe = (
        _masked(json.dumps({"type": "subscribe", "job_id": JOB})) if args.subscribe else None
    )
    clients: list[RawClient] = []
    for _ in range(args.sockets):
        _, proto = await loop.create_connection(
            lambda: RawClient(args.client, stats, subscribe), host, int(port)
        )
        clients.append(proto)
    await asyncio.gather(*(c.open for c in clients))
    await _until(stats, lambda: not args.subscribe or stats.acks >= args.sockets, 30)
    print("ready", flush=True)
    keepalive = asyncio.create_task(_keepalive(clients))
    try:
        await _until(stats, lambda: stats.complete("t"), args.timeout)
        print("t-done", flush=True)
        await _until(stats, lambda: stats.complete("l"), args.timeout)
    except TimeoutError:
        pass
    keepalive.cancel()
    print(json.dumps(_summary(stats)), flush=True)
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return 0


async def _until(stats: Stats, done: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not done():
            stats.changed.clear()
            await stats.changed.wait()


async def _keepalive(clients: list[RawClient]) -> None:
    while True:
        await asyncio.sleep(5)
        for c in clients:
            c.ping()


def _summary(stats: Stats) -> dict[str, Any]:
    t_span = stats.last["t"] - stats.first["t"]
    lat = sorted(stats.latency["l"]) or [float("nan")]
    return {
        "delivered_t": stats.counts["t"],
        "delivered_l": stats.counts["l"],
        "deliveries_per_s": stats.counts["t"] / t_span if t_span > 0 else 0.0,
        "p50_ms": 1000 * statistics.median(lat),
        "p99_ms": 1000 * lat[min(len(lat) - 1, int(len(lat) * 0.99))],
    }


# --- the driver ---------------------------------------------------------------------------


async def run_one(
    name: str,
    server: contextlib.AbstractAsyncContextManager[tuple[str, Publish]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    async with server as (address, publish):
        cmd = [sys.executable, "-m", "bench.hub_fanout", "--client", address]
        cmd += ["--sockets", str(args.sockets), "--frames", str(args.frames)]
        cmd += ["--latency-frames", str(args.latency_frames), "--timeout", str(args.timeout)]
        cmd += ["--subscribe"] if name.startswith("hub") else []
        proc = await asyncio.create_subprocess_exec(*cmd, stdout=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        assert (await proc.stdout.readline()).strip() == b"ready", f"{name}: clients not ready"
        for index in range(args.frames):
            publish("t", index)
            if index % BURST == BURST - 1:
                await asyncio.sleep(0)
        line = await proc.stdout.readline()
        if line.strip() == b"t-done":
            for index in range(args.latency_frames):
                publish("l", index)
                await asyncio.sleep(1 / args.rate)
            line = await proc.stdout.readline()
        await proc.wait()
        result: dict[str, Any] = json.loads(line)
        result["name"] = name
        return result


def _table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"{args.sockets} sockets; throughput: {args.frames} frames; latency: {args.latency_frames} "
        f"frames at {args.rate:g}/s; median of {args.repeat} round(s)",
        f"{'server':<40}{'deliveries/s':>14}{'frames/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'lost':>7}",
    ]
    expected = args.sockets * (args.frames + args.latency_frames)
    for r in rows:
        lost = expected - r["delivered_t"] - r["delivered_l"]
        rate = r["deliveries_per_s"]
        lines.append(
            f"{r['name']:<40}{rate:>14,.0f}{rate / args.sockets:>10,.0f}"
            f"{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}{lost:>7}"
        )
    return "\n".join(lines)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hub_fanout", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short sanity run")
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--frames", type=int, default=None, help="throughput phase (default 3000)")
    parser.add_argument("--latency-frames", type=int, default=None, help="default 1000")
    parser.add_argument("--rate", type=float, default=200.0, help="latency phase frames/s")
    parser.add_argument(
        "--impl", action="append", default=None, help="uvicorn ws impl(s) for the hub"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds, medians shown (default 3)"
    )
    parser.add_argument("--floor", action="store_true", help="also a raw ASGI app (no hub)")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--subscribe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.frames = args.frames or (1000 if args.quick else 3000)
    args.latency_frames = args.latency_frames or (100 if args.quick else 1000)
    args.impl = args.impl or ["wsproto"]
    args.repeat = args.repeat or (1 if args.quick else 3)
    return args


def _server(name: str) -> contextlib.AbstractAsyncContextManager[tuple[str, Publish]]:
    impl = name.split("uvicorn ")[-1].rstrip(")")
    if name.startswith("hub"):
        return hub_server(impl)
    if name.startswith("asgi"):
        return asgi_floor_server(impl)
    return bare_server()


async def driver(args: argparse.Namespace) -> int:
    names = [f"hub (uvicorn {impl})" for impl in args.impl]
    names += [f"asgi floor (uvicorn {impl})" for impl in args.impl] if args.floor else []
    names += ["bare websockets.broadcast"]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_ in range(args.repeat):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]  # rotate: no favourite
        for name in order:
            runs[name].append(await run_one(name, _server(name), args))
    rows = [_median(name, runs[name]) for name in names]
    print(_table(rows, args))
    bare = rows[-1]["deliveries_per_s"]
    for r in rows[:-1]:
        ratio = r["deliveries_per_s"] / bare if bare else 0.0
        print(f"{r['name']}: {ratio:.2f}x the bare server's throughput (target >= 0.8x)")
    for impl in args.impl if args.floor else []:
        hub, floor = (runs[f"{kind} (uvicorn {impl})"] for kind in ("hub", "asgi floor"))
        ratio = _median("", hub)["deliveries_per_s"] / (_median("", floor)["deliveries_per_s"] or 1)
        print(f"hub / asgi floor on uvicorn {impl}: {ratio:.2f}x (what the hub itself costs)")
    return 0


def _median(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each figure over the rounds (lost frames: the worst round)."""
    row: dict[str, Any] = {"name": name}
    for key in ("deliveries_per_s", "p50_ms", "p99_ms"):
        row[key] = statistics.median(r[key] for r in results)
    for key in ("delivered_t", "delivered_l"):
        row[key] = min(r[key] for r in results)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.client:
        return asyncio.run(client_main(args))
    return asyncio.run(driver(args))


if __name__ == "__main__":
    raise SystemExit(main())
