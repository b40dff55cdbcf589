"""HTTP load: one request per image, ``concurrency`` in flight, bodies built before timing.

Both servers get their bodies as ready-made bytes (JSON with base64 for playground-rt, a
multipart form for ``rembg s``), so the client spends the same little CPU on each.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import msgspec

BOUNDARY = "playground-rt-bench-boundary"
TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Request:
    path: str
    body: bytes
    content_type: str


@dataclass
class Run:
    """The outcome of one load run: every response body and latency, in request order."""

    concurrency: int
    wall_s: float
    latencies_s: list[float]
    bodies: list[bytes] = field(repr=False)
    failures: list[str]

    @property
    def per_s(self) -> float:
        return len(self.latencies_s) / self.wall_s

    def percentile_ms(self, q: float) -> float:
        return 1000 * percentile(self.latencies_s, q)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by the nearest-rank method."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def fallback_request(png: bytes, endpoint: str = "fallback") -> Request:
    body = {"pipeline_id": "rembg", "image_base64": base64.b64encode(png).decode(), "params": {}}
    return Request(f"/api/pipelines/{endpoint}", msgspec.json.encode(body), "application/json")


def preview_path_request(image_path: str) -> Request:
    body = {"pipeline_id": "rembg", "image_path": image_path, "params": {}}
    return Request("/api/pipelines/preview", msgspec.json.encode(body), "application/json")


def rembg_request(png: bytes) -> Request:
    """``POST /api/remove`` of ``rembg s``: the file upload form, model u2netp."""
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="model"\r\n\r\nu2netp\r\n'.encode(),
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        'filename="image.png"\r\nContent-Type: image/png\r\n\r\n'.encode(),
        png,
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    ]
    return Request("/api/remove", b"".join(parts), f"multipart/form-data; boundary={BOUNDARY}")


async def drive(base: str, requests: Sequence[Request], concurrency: int, expect: int = 200) -> Run:
    """Send every request once, ``concurrency`` at a time; a status but ``expect`` fails."""
    latencies, bodies = [0.0] * len(requests), [b""] * len(requests)
    failures: list[str] = []
    cursor = iter(range(len(requests)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for index in cursor:
            request = requests[index]
            started = time.perf_counter()
            response = await client.post(
                request.path, content=request.body, headers={"content-type": request.content_type}
            )
            latencies[index] = time.perf_counter() - started
            bodies[index] = response.content
            if response.status_code != expect:
                failures.append(f"#{index}: HTTP {response.status_code} {response.text[:200]}")

    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT_S, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall_s = time.perf_counter() - started
    return Run(concurrency, wall_s, latencies, bodies, failures)


async def get_json(base: str, paths: Sequence[str]) -> list[object]:
    """``GET`` each path (untimed bookkeeping, e.g. job views) and decode the JSON bodies."""
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return [msgspec.json.decode((await client.get(path)).content) for path in paths]
