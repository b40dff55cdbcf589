"""Fixtures: a real uvicorn on an ephemeral port, real images, the real u2netp model."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec
import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Browser, async_playwright
from starlette.applications import Starlette

from playground_rt.config import Settings
from playground_rt.pipeline import registry
from playground_rt.web import serving
from playground_rt.web.app import create_app
from playground_rt.web.state import AppState

MODEL_HOME = Path.home() / ".u2net"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SEED_IMAGE = "data/datasets/images/val/sample.jpg"
TERMINAL_STATES = ("completed", "failed", "cancelled")
T = TypeVar("T")


def require_model() -> None:
    if not (MODEL_HOME / "u2netp.onnx").is_file():
        pytest.fail(f"u2netp.onnx missing in {MODEL_HOME}: run `playground-rt models pull`")


def sample_image(
    width: int = 96, height: int = 72, seed: int = 7, mode: str = "RGB"
) -> Image.Image:
    """A subject (a disc) on a textured background: something rembg can cut out."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], axis=-1)
    noise = rng.integers(0, 40, size=(height, width, 3))
    pixels = np.clip(background + noise, 0, 255).astype(np.uint8)
    disc = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (min(width, height) / 3) ** 2
    pixels[disc] = (220, 40, 40)
    return Image.fromarray(pixels, "RGB").convert(mode)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


async def poll(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    what: str,
    timeout: float = 30.0,
    every: float = 0.02,
) -> T:
    """``await probe()`` until ``done`` accepts its value; that value. After ``timeout`` s,
    an ``AssertionError`` naming ``what`` and the last value seen.

    For what a test cannot wait on as an event: a job's state over REST, a condition inside
    the server. Every polling loop in the tests goes through here, so none can hang.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if done(value):
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not after {timeout:g} s; last seen: {value!r}")
        await asyncio.sleep(every)


@dataclass
class Server:
    url: str
    settings: Settings
    app: Starlette
    http: httpx.AsyncClient

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.playground
        return state

    @property
    def ws_url(self) -> str:
        return self.url.replace("http", "ws", 1) + "/ws"

    async def post(self, path: str, body: Any, **kwargs: Any) -> httpx.Response:
        headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
        return await self.http.post(
            path, content=msgspec.json.encode(body), headers=headers, **kwargs
        )

    async def ready(self, timeout: float = 30.0) -> None:
        async def status() -> tuple[int, str | None]:
            return (await self.http.get("/readyz")).status_code, self.state.model_error

        await poll(status, lambda seen: seen[0] == 200, "/readyz 200", timeout, every=0.05)

    async def job(self, job_id: str) -> dict[str, Any]:
        """The job's view (``GET /api/jobs/{job_id}``)."""
        answer = await self.http.get(f"/api/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        view: dict[str, Any] = answer.json()
        return view

    async def job_in(self, job_id: str, *states: str, timeout: float = 60.0) -> dict[str, Any]:
        """The job's view once its state is one of ``states`` (as a REST client polls)."""
        return await poll(
            lambda: self.job(job_id),
            lambda view: view["state"] in states,
            f"job {job_id} {' or '.join(states)}",
            timeout,
        )

    async def ended(self, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
        """The job's view once it is completed, failed or cancelled."""
        return await self.job_in(job_id, *TERMINAL_STATES, timeout=timeout)


def make_settings(root: Path, **overrides: Any) -> Settings:
    data = root / "data"
    image = data / "datasets" / "images" / "val" / "sample.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    if not image.exists():
        image.write_bytes(encode(sample_image(), "JPEG"))
    values: dict[str, Any] = {
        "data_root": data,
        "outputs_root": root / "outputs",
        "model_home": MODEL_HOME,
        "pull_models": False,
        "port": 0,
    }
    values.update(overrides)
    return Settings(**values)


START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0
"""Longer than any shutdown bound (grace, socket drain, uvicorn's graceful timeout)."""


async def _stopped(task: asyncio.Task[None]) -> None:
    """Wait for uvicorn to stop; past ``STOP_TIMEOUT_S``, print every pending task's stack
    (what the shutdown waits for) and fail, instead of hanging the suite."""
    done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_S)
    if done:
        task.result()
        return
    for pending in asyncio.all_tasks():
        if pending is not asyncio.current_task():
            pending.print_stack(limit=12)
    task.cancel()
    raise AssertionError(f"uvicorn did not stop within {STOP_TIMEOUT_S:g} s (stacks above)")


@contextlib.asynccontextmanager
async def running(
    settings: Settings,
    pipelines: registry.Pipelines = registry.PIPELINES,
    log_level: str = "warning",
) -> AsyncIterator[Server]:
    """A real uvicorn serving ``create_app(settings, pipelines)`` on 127.0.0.1, port chosen
    by the OS.

    The one way tests start the server in this process: the production configuration
    (``serving.config``: its protocol deadlines, WebSocket limits and drain on shutdown),
    logging at ``log_level``. Tests that need a process of their own (signals, a cluster)
    use ``procserver``.
    """
    require_model()
    app = create_app(settings, pipelines)
    local = msgspec.structs.replace(settings, host="127.0.0.1", port=0)
    server = serving.Server(serving.config(local, app, log_level=log_level))
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
    while not server.started:
        assert not task.done(), "uvicorn did not start"
        if asyncio.get_running_loop().time() > deadline:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise AssertionError(f"uvicorn not started after {START_TIMEOUT_S:g} s")
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        try:
            yield Server(url, settings, app, http)
        finally:
            server.should_exit = True
            await _stopped(task)


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    async with running(make_settings(tmp_path_factory.mktemp("server"))) as srv:
        await srv.ready()
        yield srv


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, driven by Playwright (the ``browser`` tests)."""
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `bash .ci/system-deps` (or `.ci/run`)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


@pytest.fixture(scope="module")
async def redis(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """A private redis-server for the module (the cluster tests)."""
    from .procserver import Redis  # procserver imports this module

    server = Redis(tmp_path_factory.mktemp("redis"))
    await server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def store(redis: Any) -> AsyncIterator[Any]:
    """A client on the module's Redis, emptied for each test."""
    import redis.asyncio as aioredis

    found = aioredis.from_url(redis.url)
    await found.flushall()
    try:
        yield found
    finally:
        await found.aclose()
