"""The single-page app (``static/``) in Debian's Chromium, against a real uvicorn.

The browser tests drive the page as a user would (upload, form, buttons) and read what
they cannot see through ``window.playground``, the page's debugging hook. The cache-key
parity test runs ``static/js/cachekey.js`` under node, without a browser.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Browser, Page, expect

from playground_rt.hub.connection import Close

from .conftest import SEED_IMAGE, Server, b64, encode, make_settings, running, sample_image

ROOT = Path(__file__).resolve().parents[1]
CACHEKEY_CHECK = ROOT / "tests" / "js" / "cachekey_check.mjs"
TIMEOUT_MS = 30_000


# --- cache keys: node vs the server ---------------------------------------------------------


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node (v20+) is not on PATH: the JS parity tests need it")
    return found


KEY_CASES: list[tuple[str, dict[str, Any], bytes]] = [
    (
        "preprocessing",
        {"autocontrast": True, "blur": {"kernelSize": 5}, "grayscale": True, "rembg": "client"},
        encode(sample_image()),
    ),
    (
        "preprocessing",
        {"grayscale": True, "blur": True, "autocontrast": True},
        encode(sample_image()),
    ),
    ("preprocessing", {}, encode(sample_image(seed=3), "JPEG")),
    # 0.0078125 sits exactly between two 6-decimal values: Python rounds half to even.
    ("preprocessing", {"autocontrast": {"cutoff": 0.0078125}}, encode(sample_image())),
    ("preprocessing", {"autocontrast": {"cutoff": 1 / 3}, "sharpen": {"radius": 2.5}}, b""),
    ("preprocessing", {"resize": {"width": 40}, "rotate": {"degrees": 270}}, b""),
    ("preprocessing", {"crop": {"left": 3}, "flip": True, "background_removal": "server"}, b""),
    ("preprocessing", {"rembg": "server", "blur": True, "background_removal": "client"}, b""),
    ("preprocessing", {"rembg": True, "autocontrast": True}, b""),
    (
        "preprocessing",
        {"rembg": {"strength": 0.85, "bgcolor": [1, 2, 3, 4]}, "resize": {"width": 30}},
        b"",
    ),
    ("preprocessing", {"rembg": {"strength": 1 / 3, "only_mask": True}}, b""),
    ("rembg", {}, encode(sample_image(40, 30, mode="RGBA"))),
    ("rembg", {"rembg": "client", "strength": 0.5}, b""),
    ("rembg", {"strength": 0.85, "bgcolor": [12, 34, 56, 255], "model": "u2netp"}, b""),
]


async def test_js_cache_key_matches_the_server(server: Server, tmp_path: Path) -> None:
    pipelines = (await server.http.get("/api/pipelines")).json()
    fallback_image = encode(sample_image(64, 48, seed=11))
    cases = [(pid, params, data or fallback_image) for pid, params, data in KEY_CASES]
    job = {
        "pipelines": pipelines,
        "cases": [{"pipeline_id": p, "params": q, "image": b64(d)} for p, q, d in cases],
    }
    job_path = tmp_path / "keys.json"
    job_path.write_text(json.dumps(job))
    done = subprocess.run(
        [node(), str(CACHEKEY_CHECK), str(job_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    js_keys = [r["cache_key"] for r in json.loads(done.stdout)]
    for (pid, params, data), js_key in zip(cases, js_keys, strict=True):
        body = {"pipeline_id": pid, "image_base64": b64(data), "params": params}
        answer = await server.post("/api/pipelines/preview", body)
        assert answer.status_code == 200, answer.text
        assert js_key == answer.json()["cache_key"], (pid, params)


LIMITS_CHECK = ROOT / "tests" / "js" / "limits_check.mjs"


def header_cases() -> list[tuple[str, bytes, tuple[int, int]]]:
    rgb = sample_image(123, 45, seed=4)
    rgba = sample_image(77, 91, seed=5, mode="RGBA")
    cases = [
        ("png", encode(rgb), rgb.size),
        ("png-rgba", encode(rgba), rgba.size),
        ("jpeg", encode(rgb, "JPEG"), rgb.size),
        ("gif", encode(rgb.convert("P"), "GIF"), rgb.size),
        ("bmp", encode(rgb, "BMP"), rgb.size),
        ("webp-lossy", encode(rgb, "WEBP"), rgb.size),
        ("webp-lossless", encode(rgba, "WEBP"), rgba.size),
    ]
    progressive = io.BytesIO()
    rgb.save(progressive, "JPEG", progressive=True, optimize=True)
    cases.append(("jpeg-progressive", progressive.getvalue(), rgb.size))
    extended = io.BytesIO()  # VP8X: a WebP with metadata
    rgba.save(extended, "WEBP", exif=Image.Exif().tobytes())
    cases.append(("webp-vp8x", extended.getvalue(), rgba.size))
    return cases


def test_js_reads_image_sizes_from_headers(tmp_path: Path) -> None:
    """The page refuses too many pixels before decoding: its header reader must agree
    with Pillow on every format a request may use."""
    cases = header_cases()
    job = tmp_path / "headers.json"
    job.write_text(json.dumps([b64(data) for _, data, _ in cases]))
    done = subprocess.run(
        [node(), str(LIMITS_CHECK), str(job)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    for (name, _, size), got in zip(cases, json.loads(done.stdout), strict=True):
        assert got == {"width": size[0], "height": size[1]}, name


def test_the_page_makes_elements_with_one_helper() -> None:
    """``el()`` in ``static/js/ui/dom.js`` is the one place that creates elements: a second
    wrapper would drift from its rules (false/null attributes left out, text children)."""
    static = ROOT / "static" / "js"
    makers = [
        str(path.relative_to(static))
        for path in sorted(static.rglob("*.js"))
        if "document.createElement(" in path.read_text()
    ]
    assert makers == ["ui/dom.js"]


# --- the browser ----------------------------------------------------------------------------


BLANK = "/?pipeline=preprocessing"
"""A page without an image: the URL names a place, so the example is not loaded."""


async def open_page(
    browser: Browser, url: str, init_script: str | None = None, path: str = BLANK
) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    if init_script is not None:
        await page.add_init_script(init_script)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url + path)
    await expect(page.locator("#pipeline option")).not_to_have_count(0)
    await page.wait_for_function("window.playground !== undefined")  # wired up
    assert not errors, errors
    return page


async def upload(page: Page, tmp_path: Path, image: Image.Image, name: str = "up.png") -> None:
    path = tmp_path / name
    path.write_bytes(encode(image))
    await page.set_input_files("#file-input", str(path))
    await expect(page.locator("#image-name")).to_contain_text(f"{name} (uploaded)")


async def drop(
    page: Page, image: Image.Image, name: str = "dropped.png", target: str = "#drop-zone"
) -> None:
    """Drop a PNG file on ``target``, as a drag from the file manager would."""
    await page.evaluate(
        """([data, name, target]) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
            document.querySelector(target).dispatchEvent(new DragEvent("drop", init));
        }""",
        [b64(encode(image)), name, target],
    )
    await expect(page.locator("#image-name")).to_contain_text(f"{name} (uploaded)")


async def hook(page: Page, expression: str) -> Any:
    return await page.evaluate(f"window.playground.{expression}")


async def wait_for_result(page: Page, source_prefix: str, key_prefix: str) -> dict[str, Any]:
    """Wait until the page shows a result from ``source_prefix`` for ``key_prefix``."""
    await page.wait_for_function(
        """([source, key]) => {
            const r = window.playground.result;
            return r && r.source.startsWith(source) && r.key && r.key.startsWith(key);
        }""",
        arg=[source_prefix, key_prefix],
    )
    result: dict[str, Any] = await hook(page, "result")
    return result


def page_pixels(encoded: str, width: int, height: int) -> np.ndarray[Any, Any]:
    return np.frombuffer(base64.b64decode(encoded), np.uint8).reshape(height, width, 4)


@pytest.mark.browser
async def test_client_preview_matches_the_server(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await page.uncheck("#op-rembg")  # light ops only (tests/test_page_rembg.py: the model)
    for op in ("autocontrast", "blur", "grayscale"):
        await page.check(f"#op-{op}")
    image = sample_image(120, 90, seed=5)
    await upload(page, tmp_path, image)  # the form is set first: one preview, of all three

    await wait_for_result(page, "client-workers", "preprocessing:")
    await page.wait_for_function("window.playground.freshness.state === 'current'")
    result = await hook(page, "result")  # the result of all three ops (not of a first click)
    params = {"autocontrast": True, "blur": {"kernelSize": 5}, "grayscale": True}
    assert await hook(page, "routedBackend") == "client-workers"
    await page.wait_for_function("window.playground.keyMatch === true")
    client_key, server_key = await hook(page, "clientKey"), await hook(page, "serverKey")
    assert client_key == server_key == result["key"]
    await expect(page.locator("#key-warning")).to_be_hidden()

    body = {"pipeline_id": "preprocessing", "image_base64": b64(encode(image)), "params": params}
    preview = await server.post(
        "/api/pipelines/preview", {**body, "params": {**params, "background_removal": "client"}}
    )
    assert preview.json()["cache_key"] == client_key
    answer = await server.post(
        "/api/pipelines/fallback", {**body, "params": {**params, "background_removal": "server"}}
    )
    assert answer.json()["status"] == "completed", answer.text
    png = (await server.http.get(answer.json()["result_url"])).content
    expected = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.int16)

    shown = page_pixels(await hook(page, "resultRGBA()"), result["width"], result["height"])
    assert shown.shape == expected.shape
    mad = np.abs(shown.astype(np.int16) - expected).mean(axis=(0, 1))
    assert (mad <= 2).all(), f"mean absolute difference per channel {mad}"
    await page.close()


@pytest.mark.browser
async def test_command_drawer_follows_the_form(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url, path="/")  # on the example: the seed's preview
    await drop(page, sample_image(seed=9))
    command = page.locator("#command")
    await expect(command).to_contain_text('"kernelSize":5')  # the seed's preview, as opened
    await expect(command).to_contain_text("playground-rt run --pipeline preprocessing")
    await page.focus("#op-grayscale")
    await page.keyboard.press("Space")  # keyboard use: the op toggles without a mouse
    await expect(command).to_contain_text('"grayscale":{"keep_alpha":true}')

    await page.fill("#f-blur-kernelSize", "9")
    await expect(command).to_contain_text('"kernelSize":9')
    await page.click("#copy-command")
    await expect(page.locator("#copy-status")).to_have_text(re.compile("Copied|Selected"))

    await page.fill("#f-blur-kernelSize", "4")  # even: refused at the field, command kept
    await expect(page.locator("#f-blur-kernelSize-error")).to_have_text(re.compile("Must be odd"))
    await expect(page.locator("#f-blur-kernelSize")).to_have_attribute("aria-invalid", "true")
    await expect(command).to_contain_text('"kernelSize":9')
    await expect(page.locator("#copy-command")).to_be_enabled()

    await page.set_viewport_size({"width": 400, "height": 800})
    overflow = await page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 400, "the page scrolls sideways on a narrow window"
    await page.close()


@pytest.mark.browser
async def test_fallback_runs_on_the_server_with_live_progress(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
    await upload(page, tmp_path, sample_image(320, 240, seed=21))
    await page.check("#run-on-server")
    await page.check("#op-autocontrast")
    await wait_for_result(page, "server", "preprocessing:")
    # The result may be the run before autocontrast's, whose start then resets the state:
    # both are checked on the newest run, once it has its answer.
    await page.wait_for_function(
        "window.playground.routedBackend === 'server-preprocessing'"
        " && window.playground.keyMatch === true"
    )

    await page.select_option("#pipeline", "rembg")
    result = await wait_for_result(page, "server", "rembg:")
    job_id = "rembg-" + result["key"].split(":")[1]
    row = page.locator(f'.job[data-job-id="{job_id}"]')
    await expect(row).to_have_attribute("data-state", "completed")
    await expect(row.locator("progress")).to_be_visible()
    await expect(row.locator(".job-meta")).to_contain_text("done in")
    frames = await hook(page, "frames()")
    seen = {f["type"] for f in frames if f["job_id"] == job_id}
    assert {"queued", "progress", "completed"} <= seen, frames
    await expect(page.locator("#stage-canvas")).to_have_attribute(
        "data-source", re.compile("server")
    )

    stages = [j["stage"] for j in await hook(page, "jobs()") if j["id"] == job_id]
    assert stages and stages[0], "no progress stage was shown"
    await page.close()


@pytest.mark.browser
async def test_a_downgraded_device_falls_back_to_the_server(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url, init_script="delete globalThis.OffscreenCanvas")
    await expect(page.locator("#device-note")).to_contain_text("no OffscreenCanvas")
    await expect(page.locator("#run-on-server")).to_be_checked()
    await upload(page, tmp_path, sample_image(seed=51))
    await page.check("#op-flip")
    await wait_for_result(page, "server", "preprocessing:")
    # The result may be the run before autocontrast's, whose start then resets the state:
    # both are checked on the newest run, once it has its answer.
    await page.wait_for_function(
        "window.playground.routedBackend === 'server-preprocessing'"
        " && window.playground.keyMatch === true"
    )
    await page.close()


@pytest.mark.browser
async def test_saturated_workers_fall_back_to_the_server(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await upload(page, tmp_path, sample_image(seed=61))
    # The page's own module instance (same URL): pretend its queue is past the threshold.
    await page.evaluate(
        """async () => {
            const { WorkerPool } = await import("/js/worker-pool.js");
            WorkerPool.prototype.saturated = () => true;
        }"""
    )
    await page.check("#op-rotate")
    await wait_for_result(page, "server", "preprocessing:")
    # On a loaded machine the upload's own preview and the rotate's may overlap: the newest
    # run's answer is what the page shows once it has arrived.
    await page.wait_for_function("window.playground.routedBackend === 'server-preprocessing'")
    await page.close()


async def blocker(srv: Server, seed: int, size: tuple[int, int] = (960, 720)) -> str:
    """A slow rembg job that keeps the one worker busy: alpha matting, ~1.3 s at the default
    size on a quiet 2-core machine, ~5.5 s at 2400x1800."""
    body = {
        "pipeline_id": "rembg",
        "image_base64": b64(encode(sample_image(*size, seed=seed), "JPEG")),
        "params": {"alpha_matting": True},
        "taskId": f"blocker-{seed}",
    }
    answer = await srv.post("/api/pipelines/preview", body)
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


@pytest.mark.browser
async def test_cancel_a_queued_job(browser: Browser, tmp_path: Path) -> None:
    async with running(make_settings(tmp_path, workers=1)) as srv:
        await srv.ready()
        page = await open_page(browser, srv.url)
        await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
        await upload(page, tmp_path, sample_image(seed=31))
        await page.check("#run-on-server")  # the rembg pipeline could run in the page too
        seeds = (101, 102)
        blockers = [await blocker(srv, seed) for seed in seeds]

        await page.select_option("#pipeline", "rembg")
        # The rembg job, not the page's earlier one (its row may still be queued, then go).
        queued = page.locator('.job[data-state="queued"][data-job-id^="rembg-"]').first
        await expect(queued).to_be_visible()
        job_id = await queued.get_attribute("data-job-id")
        await queued.get_by_role("button", name="Cancel").click()
        row = page.locator(f'.job[data-job-id="{job_id}"]')
        await expect(row.locator(".job-state")).to_have_text("cancelled")
        assert (await srv.http.get(f"/api/jobs/{job_id}")).json()["state"] == "cancelled"

        await page.close()
        for job, seed in zip(blockers, seeds, strict=True):  # stops at its next step
            await srv.http.delete(f"/api/jobs/{job}", params={"taskId": f"blocker-{seed}"})


@pytest.mark.browser
async def test_socket_reconnects_and_resumes(browser: Browser, tmp_path: Path) -> None:
    async with running(make_settings(tmp_path)) as srv:
        await srv.ready()
        page = await open_page(browser, srv.url)
        await page.wait_for_function("window.playground.socket.epoch !== null")
        for conn in list(srv.state.hub.connections):
            conn.close(Close.SHUTTING_DOWN, "test: reconnect and resume")
        await page.wait_for_function("window.playground.socket.connects >= 2")
        await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")

        # The resumed socket follows the page's taskId again: a server job's frames arrive.
        await upload(page, tmp_path, sample_image(seed=41))
        await page.check("#run-on-server")
        await page.check("#op-grayscale")
        result = await wait_for_result(page, "server", "preprocessing:")
        job_id = "preprocessing-" + result["key"].split(":")[1]
        frames = await hook(page, "frames()")
        assert "completed" in {f["type"] for f in frames if f["job_id"] == job_id}, frames
        await page.close()


@pytest.mark.browser
async def test_dataset_browser_picks_an_image(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await expect(page.locator("#datasets")).to_have_attribute("open", "")  # open at desktop
    await page.get_by_role("button", name=SEED_IMAGE).click()
    await expect(page.locator("#image-name")).to_have_text(SEED_IMAGE)
    await page.check("#op-grayscale")

    # The page fetches the file's bytes (GET /api/datasets/file) and hashes them as the
    # server does for image_path: the two cache keys agree.
    result = await wait_for_result(page, "client-workers", "preprocessing:")
    assert (result["width"], result["height"]) == (96, 72)
    # The picked image's own preview may still be answered when grayscale's starts: the keys
    # are compared once the newest run has its server key.
    await page.wait_for_function("window.playground.keyMatch === true")  # client = server key
    # The builder writes the path as the server resolves it (under its data root).
    await expect(page.locator("#command")).to_contain_text("images/val/sample.jpg --params")
    await page.close()


@pytest.mark.browser
async def test_page_opened_with_a_token_uses_it_for_the_api_and_the_socket(
    browser: Browser, tmp_path: Path
) -> None:
    async with running(make_settings(tmp_path, token="s3cret", preload_models=[])) as srv:
        refused = await srv.post("/api/pipelines/preview", {"pipeline_id": "preprocessing"})
        assert refused.status_code == 401
        page = await open_page(browser, srv.url, path="/?token=s3cret")
        await expect(page.locator("#socket-state")).to_have_text("live: open")
        await page.close()


@pytest.mark.browser
async def test_page_workers_report_their_figures_to_the_server(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await upload(page, tmp_path, sample_image(seed=43))
    await page.check("#op-grayscale")
    await wait_for_result(page, "client-workers", "preprocessing:")

    async def reported() -> list[Any]:
        clients = server.state.telemetry.snapshot().clients.values()
        return [r for r in clients if r.source == "client-workers" and r.workers >= 1]

    deadline = asyncio.get_running_loop().time() + 15
    while not (reports := await reported()):
        assert asyncio.get_running_loop().time() < deadline, "no worker report reached the server"
        await asyncio.sleep(0.1)
    assert all(r.taskId is None for r in reports)  # telemetry frames never carry taskIds
    assert "playground_rt_client_queue_depth" in (await server.http.get("/metrics")).text
    await page.close()
