"""``just load``: a soak run. 200 WebSocket clients and a steady stream of previews against
``playground-rt serve`` in a subprocess on loopback, for ``--seconds`` (default 300).

Each client holds one socket subscribed to its own taskId (``load-<n>``), sends an app-level
``ping`` every ``PING_EVERY_S`` (the hub closes silent sockets), and has at most one preview
in flight: ``POST /api/pipelines/preview`` with its taskId. A scheduler starts previews at
``--rate`` per second on idle clients, a mix of three kinds:

* ``client``: client-capable ops with ``"background_removal": "client"``: answered
  ``accepted`` for the browser's workers (no server job, no frames) unless the result is
  already cached;
* ``server``: ``equalize`` (no client worker), so the server runs it: cheap CPU work;
* ``rembg``: background removal with u2netp at a random ``strength``: the heavy kind.

Images come from a pool of distinct small PNGs, so some requests are cache hits and most
server jobs are real work. Every preview answered with a server job (``accepted`` on a
``server-*`` backend, or ``completed`` from the cache) must produce exactly one terminal
frame (``completed``/``failed``/``cancelled``) for its job_id on the client's socket:
a missing one after the drain is *lost*, a second one a *duplicate*; both must be 0.

Reported: requests by kind and outcome, lost/duplicate terminal frames, p50/p99 of REST
answers and of terminal frames (from the POST), the server's RSS (``VmRSS``) when ready,
at start (after an untimed warm-up: one rembg run per worker, as onnxruntime's arena grows
to its working size on a worker's first run), every 10 s, and at the end, and the
tracebacks in its log. ``--json PATH`` writes it all.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
from PIL import Image
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from playground_rt import schemas

from . import servers

CLIENTS = 200
RATE = 8.0
MIX = {"client": 0.45, "server": 0.35, "rembg": 0.20}
IMAGES = 160
PING_EVERY_S = 10.0
DRAIN_S = 60.0
SAMPLE_EVERY_S = 10.0
WARM_ROUNDS = 4
JSON = {"content-type": "application/json"}
MODEL_HOME = Path.home() / ".u2net"

_frames = msgspec.json.Decoder(schemas.ServerFrame)
TERMINAL = (schemas.Completed, schemas.Failed, schemas.Cancelled)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank ``q``-quantile in milliseconds (0 when empty)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return 1000 * ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def image_pool(n: int, seed: int = 1) -> list[str]:
    """``n`` distinct small PNGs (base64): a disc on a noisy gradient, 96..160 px wide."""
    rng = np.random.default_rng(seed)
    pool = []
    for i in range(n):
        w, h = 96 + (i % 5) * 16, 72 + (i % 4) * 12
        yy, xx = np.mgrid[0:h, 0:w]
        pixels = np.stack([xx * 255 // w, yy * 255 // h, np.full_like(xx, i % 256)], axis=-1)
        pixels = np.clip(pixels + rng.integers(0, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
        pixels[(xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(w, h) / 3) ** 2] = (220, 40, 40)
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buffer, "PNG")
        pool.append(base64.b64encode(buffer.getvalue()).decode())
    return pool


def body(kind: str, image: str, rng: random.Random, task_id: str) -> bytes:
    if kind == "client":
        params: dict[str, Any] = {"flip": True, "blur": {"kernelSize": 3}}
        params["background_removal"] = "client"
        pipeline = "preprocessing"
    elif kind == "server":
        params, pipeline = {"equalize": True, "grayscale": rng.random() < 0.5}, "preprocessing"
    else:
        params, pipeline = {"strength": round(rng.uniform(0.5, 1.0), 2)}, "rembg"
    request = {"pipeline_id": pipeline, "image_base64": image, "params": params, "taskId": task_id}
    return json.dumps(request).encode()


# --- one client -----------------------------------------------------------------------------


@dataclass
class Stats:
    rest_s: list[float] = field(default_factory=list)
    terminal_s: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    expected: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0
    socket_closes: Counter[str] = field(default_factory=Counter)
    skipped: int = 0


class LoadClient:
    """One socket (subscribed to ``task_id``) and at most one preview in flight."""

    def __init__(self, index: int, ws: ClientConnection, stats: Stats) -> None:
        self.task_id = f"load-{index}"
        self.ws = ws
        self.stats = stats
        self.busy = False
        self.terminal: dict[str, list[float]] = {}
        """job_id -> arrival times of its terminal frames on this socket."""
        self.waiting: dict[str, list[float]] = {}
        """job_id -> start times of the POSTs that were promised a terminal frame for it
        (a cache hit asked again is another request, and another frame)."""
        self._arrived = asyncio.Event()
        self.closed: str | None = None

    async def read(self) -> None:
        try:
            async for raw in self.ws:
                frame = _frames.decode(raw)
                if isinstance(frame, TERMINAL):
                    self.terminal.setdefault(frame.job_id, []).append(time.monotonic())
                    self._arrived.set()
        except ConnectionClosed as closed:
            self.closed = f"{closed.rcvd.code if closed.rcvd else 'none'}"
        finally:
            self.closed = self.closed or "eof"
            self._arrived.set()

    async def keepalive(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(PING_EVERY_S)
                await self.ws.send('{"type": "ping"}')

    async def preview(self, http: httpx.AsyncClient, kind: str, content: bytes) -> None:
        self.busy = True
        try:
            started = time.monotonic()
            try:
                response = await http.post("/api/pipelines/preview", content=content, headers=JSON)
            except httpx.HTTPError as exc:
                self.stats.outcomes[f"{kind}:error:{type(exc).__name__}"] += 1
                return
            self.stats.rest_s.append(time.monotonic() - started)
            if response.status_code != 200:
                self.stats.outcomes[f"{kind}:http-{response.status_code}"] += 1
                return
            answer = response.json()
            server_job = answer["status"] == "completed" or answer["routed_backend"] != (
                "client-workers"
            )
            self.stats.outcomes[f"{kind}:{answer['status']}:{answer['routed_backend']}"] += 1
            if server_job:
                self.stats.expected += 1
                job_id = answer["job_id"]
                self.waiting.setdefault(job_id, []).append(started)
                await self._until_terminal(job_id, len(self.waiting[job_id]))
        finally:
            self.busy = False

    async def _until_terminal(self, job_id: str, count: int, timeout: float = DRAIN_S) -> None:
        deadline = time.monotonic() + timeout
        while len(self.terminal.get(job_id, ())) < count and self.closed is None:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return

    def settle(self) -> None:
        """Count this client's terminal frames against what it was promised."""
        for job_id, starts in self.waiting.items():
            arrivals = self.terminal.get(job_id, [])
            for started, arrived in zip(starts, arrivals, strict=False):
                self.stats.terminal_s.append(arrived - started)
            if len(arrivals) < len(starts):
                self.stats.lost += [f"{self.task_id}:{job_id}"] * (len(starts) - len(arrivals))
            self.stats.duplicates += max(0, len(arrivals) - len(starts))
        if self.closed is not None:
            self.stats.socket_closes[self.closed] += 1


# --- the run --------------------------------------------------------------------------------


@contextlib.contextmanager
def server(root: Path, workers: int) -> Iterator[tuple[str, int, Path]]:
    port = servers.free_port()
    data, outputs = root / "data", root / "outputs"
    data.mkdir()
    argv = [sys.executable, "-m", "playground_rt.cli.main", "serve", "--port", str(port)]
    argv += ["--data-root", str(data), "--outputs-root", str(outputs), "--no-pull"]
    argv += ["--model-home", str(MODEL_HOME), "--log-level", "warning"]
    if workers:
        argv += ["--workers", str(workers)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLAYGROUND_")}
    base = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    with servers.running(argv, env, log, base + "/readyz") as proc:
        yield base, proc.pid, log


async def connect_clients(ws_url: str, n: int, stats: Stats) -> list[LoadClient]:
    async def one(index: int) -> LoadClient:
        ws = await connect(ws_url, proxy=None, open_timeout=30, max_queue=None)
        client = LoadClient(index, ws, stats)
        await ws.send(json.dumps({"type": "subscribe", "taskId": client.task_id, "ref": "s"}))
        return client

    clients: list[LoadClient] = []
    for start in range(0, n, 25):
        clients += await asyncio.gather(*(one(i) for i in range(start, min(n, start + 25))))
    return clients


async def warm_up(http: httpx.AsyncClient, rng: random.Random) -> None:
    """Rounds of rembg runs, two per worker at once, untimed: onnxruntime's arena grows to
    its working size over the first concurrent runs (about 0.8 GiB in all for u2netp on
    two workers), which is not growth under load."""
    workers = (await http.get("/readyz")).json()["workers"]
    pool = image_pool(WARM_ROUNDS * 2 * workers, seed=99)
    for round_ in range(WARM_ROUNDS):
        images = pool[round_ * 2 * workers : (round_ + 1) * 2 * workers]
        bodies = [body("rembg", image, rng, f"warm-{i}") for i, image in enumerate(images)]
        answers = await asyncio.gather(
            *(http.post("/api/pipelines/fallback", content=b, headers=JSON) for b in bodies)
        )
        assert all(a.json()["status"] == "completed" for a in answers), [a.text for a in answers]


async def run(args: argparse.Namespace, base: str, pid: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    pool = image_pool(args.images)
    stats = Stats()
    ws_url = base.replace("http", "ws", 1) + "/ws"
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as http:
        ready_rss = rss_kib(pid)
        await warm_up(http, rng)
        rss: list[tuple[float, int]] = [(0.0, rss_kib(pid))]
        clients = await connect_clients(ws_url, args.clients, stats)
        background = [asyncio.create_task(c.read()) for c in clients]
        background += [asyncio.create_task(c.keepalive()) for c in clients]
        rss.append((0.0, rss_kib(pid)))
        kinds, weights = list(MIX), list(MIX.values())
        requests: set[asyncio.Task[None]] = set()
        started = time.monotonic()
        next_sample, tick, sent = started + SAMPLE_EVERY_S, 1.0 / args.rate, 0
        while (now := time.monotonic()) < started + args.seconds:
            if now >= next_sample:
                rss.append((now - started, rss_kib(pid)))
                next_sample += SAMPLE_EVERY_S
            idle = [c for c in clients if not c.busy and c.closed is None]
            if not idle:
                stats.skipped += 1
            else:
                client = rng.choice(idle)
                kind = rng.choices(kinds, weights)[0]
                content = body(kind, rng.choice(pool), rng, client.task_id)
                task = asyncio.create_task(client.preview(http, kind, content))
                requests.add(task)
                task.add_done_callback(requests.discard)
                sent += 1
            await asyncio.sleep(
                max(0.0, started + (sent + stats.skipped) * tick - time.monotonic())
            )
        elapsed = time.monotonic() - started
        if requests:  # every preview waits at most DRAIN_S for its terminal frame
            await asyncio.wait(requests)
        rss.append((time.monotonic() - started, rss_kib(pid)))
        for client in clients:
            client.settle()
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        for client in clients:
            with contextlib.suppress(Exception):
                await client.ws.close()
    return report(args, stats, ready_rss, rss, elapsed)


def report(
    args: argparse.Namespace,
    stats: Stats,
    ready_rss: int,
    rss: list[tuple[float, int]],
    elapsed: float,
) -> dict[str, Any]:
    return {
        "seconds": round(elapsed, 1),
        "clients": args.clients,
        "rate_per_s": args.rate,
        "mix": MIX,
        "requests": sum(stats.outcomes.values()),
        "outcomes": dict(sorted(stats.outcomes.items())),
        "skipped_all_clients_busy": stats.skipped,
        "terminal_frames_expected": stats.expected,
        "terminal_frames_lost": len(stats.lost),
        "terminal_frames_duplicated": stats.duplicates,
        "lost_examples": stats.lost[:10],
        "sockets_closed_by_server": dict(stats.socket_closes),
        "rest_ms": {
            "p50": round(percentile(stats.rest_s, 0.50), 1),
            "p99": round(percentile(stats.rest_s, 0.99), 1),
            "max": round(1000 * max(stats.rest_s, default=0), 1),
        },
        "terminal_frame_ms": {
            "p50": round(percentile(stats.terminal_s, 0.50), 1),
            "p99": round(percentile(stats.terminal_s, 0.99), 1),
            "max": round(1000 * max(stats.terminal_s, default=0), 1),
        },
        "rss_kib": {
            "ready": ready_rss,
            "start": rss[0][1],
            "after_connect": rss[1][1],
            "end": rss[-1][1],
            "max": max(v for _, v in rss),
            "samples": rss,
        },
        "load_average": os.getloadavg(),
    }


def show(result: dict[str, Any]) -> None:
    rest, term, rss = result["rest_ms"], result["terminal_frame_ms"], result["rss_kib"]
    print(
        f"{result['requests']} previews in {result['seconds']} s at {result['rate_per_s']}/s, "
        f"{result['clients']} sockets; all clients busy {result['skipped_all_clients_busy']}x"
    )
    for outcome, n in result["outcomes"].items():
        print(f"  {n:6d}  {outcome}")
    print(
        f"terminal frames: expected {result['terminal_frames_expected']}, "
        f"lost {result['terminal_frames_lost']}, "
        f"duplicated {result['terminal_frames_duplicated']}"
    )
    print(f"REST answer ms: p50 {rest['p50']}  p99 {rest['p99']}  max {rest['max']}")
    print(f"terminal frame ms: p50 {term['p50']}  p99 {term['p99']}  max {term['max']}")
    print(
        f"server RSS MiB: ready {rss['ready'] / 1024:.1f}, "
        f"after warm-up {rss['start'] / 1024:.1f}, with sockets "
        f"{rss['after_connect'] / 1024:.1f}, end {rss['end'] / 1024:.1f}, "
        f"max {rss['max'] / 1024:.1f}"
    )
    print(
        f"sockets closed by the server: {result['sockets_closed_by_server'] or 'none'}; "
        f"server log tracebacks: {result['server_tracebacks']}"
    )


def main(argv: list[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench.load", description=__doc__.split("\n\n")[0])
    cli.add_argument("--seconds", type=float, default=300.0)
    cli.add_argument("--clients", type=int, default=CLIENTS)
    cli.add_argument("--rate", type=float, default=RATE, help="previews started per second")
    cli.add_argument("--images", type=int, default=IMAGES, help="distinct images in the pool")
    cli.add_argument("--workers", type=int, default=0, help="server workers (0: its default)")
    cli.add_argument("--seed", type=int, default=7)
    cli.add_argument("--json", type=Path, help="write the figures here as well")
    args = cli.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="playground-load-") as tmp:
        with server(Path(tmp), args.workers) as (base, pid, log):
            result = asyncio.run(run(args, base, pid))
        text = log.read_text(errors="replace")
        result["server_tracebacks"] = text.count("Traceback")
        result["server_errors"] = [
            line for line in text.splitlines() if line.startswith(("ERROR", "CRITICAL"))
        ][:20]
        result["server_log_tail"] = text.splitlines()[-60:] if result["server_tracebacks"] else []
    show(result)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    ok = not result["terminal_frames_lost"] and not result["terminal_frames_duplicated"]
    return 0 if ok and not result["server_tracebacks"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
