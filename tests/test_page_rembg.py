"""Background removal in the page (``static/js/model-worker.js``, ``rembg.js``, ``placement.js``)
in Debian's Chromium against a real uvicorn: the browser's cut-out against the server's, the
model kept in Cache Storage, no inference when only the blend moves, the downgrades that send
the work to the server and say why, the figures reaching ``/metrics``. The placement rules
themselves are checked under node with made-up measurements.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import numpy.typing as npt
import pytest
from bench.synth import photo
from PIL import Image
from playwright.async_api import Browser, BrowserContext, Page, Request, expect
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .conftest import Server, encode, make_settings, running, sample_image
from .test_page import hook, node, page_pixels

ROOT = Path(__file__).resolve().parents[1]
PLACEMENT_CHECK = ROOT / "tests" / "js" / "placement_check.mjs"
MODEL_TIMEOUT_MS = 120_000  # a first run on a busy 2-core machine takes seconds
TIMES = "\N{MULTIPLICATION SIGN}"  # as the page writes it: "WASM <times> 2 threads"
SEED_PARAMS = {"autocontrast": {"cutoff": 0}, "rembg": "client", "blur": {"kernelSize": 5}}

# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """One profile for the module: the model stays in its Cache Storage between pages."""
    made = await browser.new_context(viewport={"width": 1280, "height": 900})
    made.set_default_timeout(MODEL_TIMEOUT_MS)
    yield made
    await made.close()


class Bodies:
    """The preview requests a page sends (their JSON bodies), in order."""

    def __init__(self, page: Page) -> None:
        self.sent: list[dict[str, Any]] = []
        page.on("request", self._seen)

    def _seen(self, request: Request) -> None:
        if request.url.endswith("/api/pipelines/preview") and request.post_data:
            self.sent.append(json.loads(request.post_data))

    @property
    def last(self) -> dict[str, Any]:
        assert self.sent, "the page sent no preview request"
        return self.sent[-1]


SEED_PLACE = "pipeline=preprocessing&params=" + quote(
    json.dumps({"autocontrast": True, "rembg": True, "blur": {"kernelSize": 5}})
)
"""A page on the seed's preview without an image (the example's image is not loaded)."""


async def open_page(
    ctx: BrowserContext, url: str, *, init_script: str | None = None, wait_model: bool = True
) -> tuple[Page, Bodies]:
    page = await ctx.new_page()
    if init_script is not None:
        await page.add_init_script(init_script)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    bodies = Bodies(page)
    await page.goto(url + ("&" if "?" in url else "/?") + SEED_PLACE)
    await expect(page.locator("#pipeline option")).not_to_have_count(0)
    await page.wait_for_function("window.playground !== undefined")  # wired up
    if wait_model:
        await page.wait_for_function(
            "window.playground !== undefined && window.playground.rembg?.state !== 'loading'"
        )
    assert not errors, errors
    return page, bodies


async def show(page: Page, tmp_path: Path, image: Image.Image, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(encode(image))
    await page.set_input_files("#file-input", str(path))
    await expect(page.locator("#image-name")).to_contain_text(name)


async def result_for(page: Page, source: str, previous_key: str | None = None) -> dict[str, Any]:
    """The next result shown from ``source`` (a key other than ``previous_key``)."""
    await page.wait_for_function(
        """([source, previous]) => {
            const r = window.playground.result;
            return r && r.source.startsWith(source) && r.key && r.key !== previous;
        }""",
        arg=[source, previous_key],
    )
    result: dict[str, Any] = await hook(page, "result")
    return result


async def shown_pixels(page: Page, result: dict[str, Any]) -> npt.NDArray[np.uint8]:
    pixels: npt.NDArray[np.uint8] = page_pixels(
        await hook(page, "resultRGBA()"), result["width"], result["height"]
    )
    return pixels


async def server_result(server: Server, body: dict[str, Any]) -> tuple[str, npt.NDArray[Any]]:
    """The same request with the page's fallback switch, run on the server: (key, RGBA)."""
    forced = {**body, "params": {**body["params"], "background_removal": "server"}}
    answer = (await server.post("/api/pipelines/fallback", forced)).json()
    assert answer["status"] == "completed", answer
    assert answer["routed_backend"].startswith("server-")
    png = (await server.http.get(answer["result_url"])).content
    return answer["cache_key"], np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"))


def server_jobs(server: Server) -> tuple[int, int, int]:
    """What moves when the server runs a job: completed runs, active and finished jobs."""
    jobs = server.state.jobs
    return jobs.executor.stats.completed, len(jobs.active), len(jobs.finished)


def alpha_agreement(page: npt.NDArray[Any], ref: npt.NDArray[Any]) -> tuple[int, float]:
    """(max abs difference of alpha, IoU of alpha >= 128)."""
    a, b = page[..., 3].astype(np.int16), ref[..., 3].astype(np.int16)
    inside_a, inside_b = a >= 128, b >= 128
    union = int((inside_a | inside_b).sum())
    iou = 1.0 if union == 0 else int((inside_a & inside_b).sum()) / union
    return int(np.abs(a - b).max()), iou


def count_requests(server: Server, path: str) -> list[int]:
    """Wrap the route at ``path``: the returned list grows by one per request it answers."""
    (route,) = [r for r in server.app.routes if isinstance(r, Route) and r.path == path]
    inner: ASGIApp = route.app
    hits: list[int] = []

    async def counted(scope: Scope, receive: Receive, send: Send) -> None:
        hits.append(1)
        await inner(scope, receive, send)

    route.app = counted
    return hits


# --- the browser's cut-out is the server's ------------------------------------------------------

PHOTOS = [
    pytest.param(lambda: photo(1), id="photo-640x480-a"),
    pytest.param(lambda: photo(2), id="photo-640x480-b"),
    pytest.param(lambda: photo(7, (1633, 1225)), id="photo-2mp"),
    pytest.param(lambda: sample_image(480, 360, seed=5), id="disc-480x360"),
]


@pytest.mark.browser
@pytest.mark.parametrize("make", PHOTOS)
async def test_browser_cutout_matches_the_server(
    server: Server,
    context: BrowserContext,
    tmp_path: Path,
    make: Callable[[], Image.Image],
    request: pytest.FixtureRequest,
) -> None:
    page, bodies = await open_page(context, server.url)
    assert (await hook(page, "rembg"))["state"] == "ready"
    before = server_jobs(server)
    await show(page, tmp_path, make(), "photo.png")
    result = await result_for(page, "client-workers")

    # The seed's preview, run in the page: no server job at all.
    assert bodies.last["params"] == SEED_PARAMS
    assert await hook(page, "routedBackend") == "client-workers"
    assert server_jobs(server) == before
    assert (await hook(page, "rembg"))["runs"] >= 1
    await expect(page.locator("#placement")).to_contain_text(
        "browser · WASM \N{MULTIPLICATION SIGN}"
    )

    key, expected = await server_result(server, bodies.last)
    assert await hook(page, "clientKey") == await hook(page, "serverKey") == key == result["key"]
    shown = await shown_pixels(page, result)
    assert shown.shape == expected.shape
    max_diff, iou = alpha_agreement(shown, expected)
    colour = int(np.abs(shown[..., :3].astype(np.int16) - expected[..., :3]).max())
    # The figures, for `pytest --cache-show 'rembg-parity/*'`.
    figures = {"alpha_max_abs_diff": max_diff, "alpha_iou": round(iou, 6), "rgb_max": colour}
    if cache := getattr(request.config, "cache", None):  # absent under -p no:cacheprovider
        cache.set(f"rembg-parity/{request.node.callspec.id}", figures)
    assert max_diff <= 2 and iou >= 0.995, (max_diff, iou)
    assert colour <= 4, colour  # autocontrast's stretch may double a one-step difference
    await page.close()


@pytest.mark.browser
async def test_strength_moves_reblend_without_inference(
    server: Server, context: BrowserContext, tmp_path: Path
) -> None:
    page, bodies = await open_page(context, server.url)
    await show(page, tmp_path, photo(11), "subject.png")
    first = await result_for(page, "client-workers")
    runs = (await hook(page, "rembg"))["runs"]

    await page.fill("#f-rembg-strength", "0.5")
    second = await result_for(page, "client-workers", first["key"])
    await page.locator("#f-rembg-strength-slider").fill("0.25")
    third = await result_for(page, "client-workers", second["key"])
    third_pixels = await shown_pixels(page, third)
    quarter = bodies.last
    assert quarter["params"]["rembg"]["strength"] == 0.25
    await page.check("#f-rembg-only_mask")
    await result_for(page, "client-workers", third["key"])

    model = await hook(page, "rembg")
    assert model["runs"] == runs, "moving strength/only_mask ran the model again"
    assert model["blends"] >= 3
    assert (await hook(page, "placement"))["why"] == "mask kept"
    await expect(page.locator("#placement")).to_contain_text("mask kept, re-blend")

    # The re-blend is the server's blend of the same request.
    _, expected = await server_result(server, quarter)
    max_diff, iou = alpha_agreement(third_pixels, expected)
    assert max_diff <= 2 and iou >= 0.995, (max_diff, iou)
    await page.close()


@pytest.mark.browser
async def test_the_model_is_fetched_once_and_kept_in_cache_storage(
    browser: Browser, tmp_path: Path
) -> None:
    async with running(make_settings(tmp_path)) as srv:
        await srv.ready()
        hits = count_requests(srv, "/models/{model}.onnx")
        ctx = await browser.new_context()
        ctx.set_default_timeout(MODEL_TIMEOUT_MS)
        page, _ = await open_page(ctx, srv.url)
        first = await hook(page, "rembg")
        assert first["state"] == "ready" and first["modelCached"] is False
        assert len(hits) == 1

        await page.reload()
        await page.wait_for_function("window.playground?.rembg?.state === 'ready'")
        assert (await hook(page, "rembg"))["modelCached"] is True
        assert len(hits) == 1, "the reload fetched the model from the server again"

        response = await srv.http.get("/models/u2netp.onnx")
        assert response.headers["etag"] == '"8e83ca70e441ab06c318d82300c84806"'
        assert "immutable" in response.headers["cache-control"]
        again = await srv.http.get(
            "/models/u2netp.onnx", headers={"if-none-match": response.headers["etag"]}
        )
        assert again.status_code == 304 and not again.content
        await ctx.close()


def test_the_runtime_is_pinned_to_the_servers_onnxruntime() -> None:
    package = json.loads((ROOT / "package.json").read_text())
    lock = json.loads((ROOT / "package-lock.json").read_text())
    pinned = package["dependencies"]["onnxruntime-web"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", pinned), f"not an exact version: {pinned}"
    assert lock["packages"]["node_modules/onnxruntime-web"]["version"] == pinned
    server = metadata.version("onnxruntime")
    assert pinned.split(".")[:2] == server.split(".")[:2], (pinned, server)


async def test_runtime_files_and_isolation_headers(server: Server) -> None:
    page = await server.http.get("/")
    assert page.headers["cross-origin-opener-policy"] == "same-origin"
    assert page.headers["cross-origin-embedder-policy"] == "require-corp"
    wasm = await server.http.get("/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm")
    assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
    assert wasm.content[:4] == b"\0asm"
    module = await server.http.get("/vendor/onnxruntime-web/ort.wasm.min.mjs")
    assert module.headers["content-type"].startswith("text/javascript")
    for bad in ("../package.json", "ort.wasm.min.mjs.map", "LICENSE"):
        assert (await server.http.get(f"/vendor/onnxruntime-web/{bad}")).status_code == 404
    assert (await server.http.get("/models/u2net.onnx")).status_code == 404


# --- downgrades: the server removes the background, and the page says why -----------------------


async def expect_server_removal(
    page: Page, bodies: Bodies, tmp_path: Path, why: str, seed: int
) -> None:
    await show(page, tmp_path, photo(seed), "downgraded.png")
    await result_for(page, "server")
    assert bodies.last["params"]["background_removal"] == "server"
    assert bodies.last["params"]["rembg"] == "client"  # the same payload plus the switch
    assert await hook(page, "routedBackend") == "server-preprocessing"
    assert await hook(page, "keyMatch") is True
    await expect(page.locator("#placement")).to_contain_text(f"server · {why}")


@pytest.mark.browser
async def test_missing_runtime_sends_removal_to_the_server(
    browser: Browser, tmp_path: Path
) -> None:
    static = tmp_path / "checkout" / "static"  # a checkout where `npm ci` never ran
    shutil.copytree(ROOT / "static", static)
    async with running(make_settings(tmp_path, static_dir=static)) as srv:
        await srv.ready()
        ctx = await browser.new_context()
        ctx.set_default_timeout(MODEL_TIMEOUT_MS)
        page, bodies = await open_page(ctx, srv.url)
        model = await hook(page, "rembg")
        assert model["state"] == "unavailable"
        assert "not installed on the server (npm ci)" in model["detail"]
        await expect(page.locator("#model-note")).to_contain_text("runs on the server")
        await expect_server_removal(page, bodies, tmp_path, "the onnxruntime-web runtime", 21)
        await ctx.close()


@pytest.mark.browser
async def test_low_device_memory_sends_removal_to_the_server(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    ctx = await browser.new_context()
    ctx.set_default_timeout(MODEL_TIMEOUT_MS)
    script = "Object.defineProperty(Navigator.prototype, 'deviceMemory', { get: () => 0.5 })"
    page, bodies = await open_page(ctx, server.url, init_script=script, wait_model=False)
    assert await hook(page, "rembg") is None  # no model worker was even started
    await expect(page.locator("#model-note")).to_contain_text("low device memory (0.5 GB)")
    await expect_server_removal(page, bodies, tmp_path, "low device memory (0.5 GB)", 22)
    await ctx.close()


@pytest.mark.browser
async def test_a_device_over_the_budget_sends_removal_to_the_server(
    server: Server, context: BrowserContext, tmp_path: Path
) -> None:
    page, bodies = await open_page(context, server.url + "/?budget_ms=1")
    await show(page, tmp_path, photo(31), "calibrate.png")
    await result_for(page, "client-workers")  # the first run calibrates, in the page
    assert (await hook(page, "placement"))["why"] == "first run calibrates"
    await expect_server_removal(page, bodies, tmp_path, "this device is too slow for u2netp", 23)
    await page.close()


# --- telemetry --------------------------------------------------------------------------------


@pytest.mark.browser
async def test_model_timings_reach_the_server_and_metrics(
    server: Server, context: BrowserContext, tmp_path: Path
) -> None:
    page, _ = await open_page(context, server.url)
    await show(page, tmp_path, photo(41), "timed.png")
    await result_for(page, "client-workers")

    async def reported() -> list[Any]:
        clients = server.state.telemetry.snapshot().clients.values()
        return [r.models["u2netp"] for r in clients if r.models.get("u2netp", None)]

    await page.wait_for_function("window.playground?.rembg?.runs >= 1")
    for _ in range(100):
        if any(m.infer_ms for m in await reported()):
            break
        await page.wait_for_timeout(100)
    model = next(m for m in await reported() if m.infer_ms)
    assert model.backend == "wasm" and model.threads >= 1 and model.runs >= 1
    metrics = (await server.http.get("/metrics")).text
    assert 'playground_rt_client_inference_seconds{backend="wasm",model="u2netp"' in metrics
    await expect(page.locator("#telemetry-local")).to_contain_text(
        "u2netp (WASM \N{MULTIPLICATION SIGN}"
    )
    await page.close()


# --- the page opens on the seed's preview -------------------------------------------------------


@pytest.mark.browser
async def test_page_opens_on_the_seed_preview(server: Server, context: BrowserContext) -> None:
    page, _ = await open_page(context, server.url, wait_model=False)
    for op in ("autocontrast", "rembg", "blur"):
        await expect(page.locator(f"#op-{op}")).to_be_checked()
    for op in ("grayscale", "resize", "sharpen"):
        await expect(page.locator(f"#op-{op}")).not_to_be_checked()
    await expect(page.locator("#f-blur-kernelSize")).to_have_value("5")
    await page.close()


# --- placement rules, under node -------------------------------------------------------------

FAST_SERVER = {"serverJobs": [["u2netp", {"op.rembg": 200}]], "uploads": [[1_000_000, 10]]}
SLOW_UPLINK = {"serverJobs": FAST_SERVER["serverJobs"], "uploads": [[1_000_000, 2000]]}
TRANSFER = {"transfer": {"upload": 800_000, "download": 600_000}}
PLACEMENTS: list[Any] = [
    pytest.param({"isolated": False}, "server", "not cross-origin isolated", id="not-isolated"),
    pytest.param({"deviceMemory": 1}, "server", "low device memory (1 GB)", id="low-memory"),
    pytest.param({"rembg": None}, "server", "no model worker", id="no-worker"),
    pytest.param(
        {"rembg": {"state": "unavailable", "detail": "runtime missing"}},
        "server",
        "runtime missing",
        id="runtime-missing",
    ),
    pytest.param({"rembg": {"measured": 9000}}, "server", "too slow for u2netp", id="budget"),
    pytest.param({"rembg": {"queued": 3}}, "server", "queue is saturated", id="saturated"),
    pytest.param({"rembg": {}, "pool": {"queued": 3}}, "server", "saturated", id="pool-full"),
    pytest.param({"rembg": {"masks": ["k"], "measured": 9e9}}, "client", "mask kept", id="slow"),
    pytest.param({"rembg": {"masks": ["k"], "measured": 700}}, "client", "mask kept", id="mask"),
    pytest.param({"rembg": {}}, "client", "first run calibrates", id="calibrate"),
    pytest.param({"rembg": {"measured": 700}}, "client", "no server timing yet", id="unknown"),
    pytest.param(
        {"rembg": {"measured": 700}, **FAST_SERVER, "decide": TRANSFER},
        "server",
        "this device is slower: est. 700 ms vs 244 ms",
        id="server-faster",
    ),
    pytest.param(
        {"rembg": {"measured": 700}, **FAST_SERVER, "decide": {**TRANSFER, "auto": False}},
        "client",
        "measured choice off",
        id="pinned",
    ),
    pytest.param(
        {
            "rembg": {"measured": 700},
            **FAST_SERVER,
            "telemetry": {"queue_depth": 8, "running": 2, "workers": 2, "durations_ms": {}},
        },
        "client",
        "est. 700 ms here vs",
        id="server-busy",
    ),
    pytest.param(
        {
            "rembg": {"measured": 700},
            "serverJobs": [["u2netp", {"op.rembg": 200}]],
            "uploads": [[1_000_000, 2000]],
            "decide": TRANSFER,
        },
        "client",
        "est. 700 ms here vs",
        id="slow-upload",
    ),
]


def test_placement_rules(tmp_path: Path) -> None:
    cases = [p.values for p in PLACEMENTS]
    job = [{"rembg": {}, **given} for given, _, _ in cases]
    for case, (given, _, _) in zip(job, cases, strict=True):
        if "rembg" in given and given["rembg"] is None:
            case["rembg"] = None
    path = tmp_path / "placement.json"
    path.write_text(json.dumps(job))
    done = subprocess.run(
        [node(), str(PLACEMENT_CHECK), str(path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for decision, param in zip(json.loads(done.stdout), PLACEMENTS, strict=True):
        _, where, why = param.values
        assert (decision["where"], why in decision["why"]) == (where, True), (param.id, decision)
