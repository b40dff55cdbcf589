"""The page as a user meets it (issue 13), in Debian's Chromium against a real uvicorn: the
compare stage, the freshness marker, live sliders, the URL and reloads, progress, limits,
the first screen, the forms, downloads, the layout, and an axe-core accessibility check.

What the eye cannot read from the DOM (the stage's view, the canvas's pixels) the tests
read through ``window.playground``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from playwright.async_api import Browser, FloatRect, Page, Request, Route, expect

from .conftest import SEED_IMAGE, Server, encode, make_settings, running, sample_image
from .test_page import blocker, drop, hook, open_page, page_pixels, upload, wait_for_result

ROOT = Path(__file__).resolve().parents[1]
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"

pytestmark = pytest.mark.browser
expect.set_options(timeout=30_000)  # server jobs behind a blocker take seconds here


# --- helpers -----------------------------------------------------------------------------------


async def wait_current(page: Page) -> None:
    await page.wait_for_function("window.playground?.freshness.state === 'current'")


async def stage(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await hook(page, "stage")
    return state


async def pixel(page: Page, x: float, y: float) -> list[int]:
    value: list[int] = await page.evaluate("([x, y]) => window.playground.pixelAt(x, y)", [x, y])
    return value


def gray(rgba: list[int]) -> bool:
    return rgba[0] == rgba[1] == rgba[2]


async def canvas(page: Page) -> FloatRect:
    box = await page.locator("#stage-canvas").bounding_box()
    assert box is not None
    return box


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def previews(page: Page) -> list[str]:
    """Every preview POST the page sends from now on (their bodies)."""
    sent: list[str] = []

    def seen(request: Request) -> None:
        if request.method == "POST" and request.url.endswith("/api/pipelines/preview"):
            sent.append(request.post_data or "")

    page.on("request", seen)
    return sent


async def axe_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not AXE.is_file():
        pytest.fail(f"{AXE} is missing: run `npm ci` (scripts/test does)")
    if not await page.evaluate("typeof window.axe !== 'undefined'"):
        await page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = await page.evaluate(
        """async () => {
            const result = await axe.run(document, { resultTypes: ["violations"] });
            return result.violations
                .filter((v) => v.impact === "serious" || v.impact === "critical")
                .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                               nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")) }));
        }"""
    )
    return found


@pytest.fixture(scope="module")
async def slow_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    """One worker: a blocker job keeps the page's jobs queued for as long as a test needs."""
    async with running(make_settings(tmp_path_factory.mktemp("slow"), workers=1)) as srv:
        await srv.ready()
        yield srv


HOLD = (2400, 1800)
"""A blocker's size for the slow server: it holds the worker ~5.5 s, longer than a page reload
on a busy CI machine (at 960x720, ~1.3 s, the job behind it sometimes ran before the page had
re-attached)."""


async def release(srv: Server, job_id: str, seed: int) -> None:
    await srv.http.delete(f"/api/jobs/{job_id}", params={"taskId": f"blocker-{seed}"})


# --- 1. the compare stage ---------------------------------------------------------------------


async def test_compare_stage_wipe_zoom_pan_and_one_to_one(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await upload(page, tmp_path, sample_image(160, 120, seed=5))
    await page.check("#op-grayscale")
    await wait_current(page)
    box = await canvas(page)
    w, h = box["width"], box["height"]
    assert (await stage(page))["mode"] == "wipe"
    assert not gray(await pixel(page, 0.25 * w, h / 2)), "left of the handle: the original"
    assert gray(await pixel(page, 0.75 * w, h / 2)), "right of the handle: the result"

    await page.focus("#wipe")  # the wipe by keyboard
    await page.keyboard.press("End")
    assert not gray(await pixel(page, 0.75 * w, h / 2))
    await page.keyboard.press("Home")
    assert gray(await pixel(page, 0.25 * w, h / 2))
    await page.keyboard.press("PageUp")  # by the mouse: grab the handle, drag it to 80 %
    start = (await stage(page))["wipe"] * w
    await page.mouse.move(box["x"] + start, box["y"] + h / 2)
    await page.mouse.down()
    await page.mouse.move(box["x"] + 0.8 * w, box["y"] + h / 2, steps=5)
    await page.mouse.up()
    assert abs((await stage(page))["wipe"] - 0.8) < 0.02

    await page.click("#zoom-1to1")
    assert abs((await stage(page))["pixelRatio"] - 1) < 1e-6
    await expect(page.locator("#zoom-level")).to_have_text("100%")
    await page.click("#zoom-fit")
    assert (await stage(page))["zoom"] == 1

    # The wheel zooms around the pointer: the picture point under it stays put.
    at = (0.6 * w, 0.4 * h)

    def under(s: dict[str, Any]) -> tuple[float, float]:
        return (
            s["u"] * 160 + (at[0] - w / 2) / s["scale"],
            s["v"] * 120 + (at[1] - h / 2) / s["scale"],
        )

    before = await stage(page)
    await page.mouse.move(box["x"] + at[0], box["y"] + at[1])
    await page.mouse.wheel(0, -400)
    await page.wait_for_function("window.playground.stage.zoom > 1.5")
    after = await stage(page)
    assert np.allclose(under(before), under(after), atol=0.5)

    # A drag away from the handle pans: the picture follows the pointer.
    await page.mouse.move(box["x"] + 0.3 * w, box["y"] + 0.7 * h)
    await page.mouse.down()
    await page.mouse.move(box["x"] + 0.3 * w + 40, box["y"] + 0.7 * h - 25, steps=4)
    await page.mouse.up()
    panned = await stage(page)
    assert abs(panned["u"] - (after["u"] - 40 / (160 * after["scale"]))) < 1e-3
    assert abs(panned["v"] - (after["v"] + 25 / (120 * after["scale"]))) < 1e-3

    # The keyboard: + zooms, 0 fits, 1 is 1:1, arrows pan.
    await page.focus("#stage")
    await page.keyboard.press("0")
    await page.keyboard.press("+")
    assert abs((await stage(page))["zoom"] - 1.25) < 1e-6
    u = (await stage(page))["u"]
    await page.keyboard.press("ArrowRight")
    assert (await stage(page))["u"] > u
    await page.keyboard.press("1")
    assert abs((await stage(page))["pixelRatio"] - 1) < 1e-6
    await page.keyboard.press("0")

    # Side by side: one zoom and pan for both panes; the original left, the result right.
    await page.click("#mode-side")
    await expect(page.locator("#mode-side")).to_have_attribute("aria-pressed", "true")
    assert not gray(await pixel(page, 0.25 * w, h / 2))
    assert gray(await pixel(page, 0.75 * w, h / 2))

    # Touch: two fingers pinch apart, the picture zooms in.
    await page.evaluate(
        """([x, y]) => {
            const stage = document.getElementById("stage");
            const box = stage.getBoundingClientRect();
            const fire = (type, id, dx) => stage.dispatchEvent(new PointerEvent(type, {
                pointerId: id, pointerType: "touch", isPrimary: id === 1, bubbles: true,
                clientX: box.left + x + dx, clientY: box.top + y }));
            fire("pointerdown", 1, -20); fire("pointerdown", 2, 20);
            fire("pointermove", 2, 80); fire("pointermove", 1, -80);
            fire("pointerup", 1, -80); fire("pointerup", 2, 80);
        }""",
        [w / 4, h / 2],
    )
    assert (await stage(page))["zoom"] > 3
    await page.close()


async def test_cutout_backdrop_and_mask_overlay(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await upload(page, tmp_path, sample_image(160, 120, seed=8))
    await page.check("#run-on-server")  # the cut-out's bytes: the server's
    await page.select_option("#pipeline", "rembg")
    await wait_for_result(page, "server", "rembg:")
    await wait_current(page)
    await expect(page.locator("#mask-overlay")).to_be_enabled()
    box = await canvas(page)
    w, h = box["width"], box["height"]
    s = await stage(page)
    left = w / 2 - 80 * s["scale"]  # the picture's corners on screen (fit, centred)
    top = h / 2 - 60 * s["scale"]
    corner = (w - left - 4, top + 4)  # top right: background, removed
    await page.select_option("#backdrop", "black")
    dark = await pixel(page, *corner)
    await page.select_option("#backdrop", "white")
    light = await pixel(page, *corner)
    assert sum(dark[:3]) < 240 and sum(light[:3]) > 520, (dark, light)

    original = await pixel(page, left + 4, top + 4)  # top left: the original's background
    await page.check("#mask-overlay")
    tinted = await pixel(page, left + 4, top + 4)
    assert (await stage(page))["mask"] is True
    assert tinted[0] >= original[0] and tinted[1] < original[1], (original, tinted)
    await page.close()


# --- 2. never a stale result shown as current ---------------------------------------------


async def test_stale_marker_after_an_invalid_value_and_a_pipeline_switch(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    marker = page.locator("#freshness")
    command = page.locator("#command")
    await upload(page, tmp_path, sample_image(seed=12))
    await page.check("#op-blur")
    await wait_current(page)
    await expect(marker).to_have_attribute("data-state", "current")
    await expect(command).to_contain_text('"kernelSize":5')

    await page.fill("#f-blur-kernelSize", "abc")
    await expect(marker).to_have_attribute("data-state", "invalid")
    await expect(marker).to_contain_text("Out of date")
    await expect(marker).to_contain_text("Kernel size: Enter a whole number")
    await expect(command).to_contain_text('"kernelSize":5')  # the last valid command stays
    await page.fill("#f-blur-kernelSize", "7")
    await wait_current(page)
    await expect(command).to_contain_text('"kernelSize":7')

    # A pipeline switch: the blur result is not the rembg form's picture.
    await page.select_option("#pipeline", "rembg")
    assert await hook(page, "freshness.state") != "current"
    await expect(marker).not_to_have_attribute("data-state", "current")
    await wait_for_result(page, "", "rembg:")
    await wait_current(page)

    # Live preview off: an edit leaves the picture out of date; the drawer shows the command
    # of the picture and the form's pending one beside it, until Preview runs it.
    await page.uncheck("#auto-preview")
    await page.fill("#f-strength", "0.5")
    await expect(marker).to_have_attribute("data-state", "stale")
    await expect(marker).to_contain_text("press Preview")
    await expect(page.locator("#pending")).to_be_visible()
    await expect(page.locator("#pending-command")).to_contain_text('"strength":0.5')
    await expect(command).not_to_contain_text('"strength":0.5')
    await page.click("#preview-button")
    await wait_current(page)
    await expect(command).to_contain_text('"strength":0.5')
    await expect(page.locator("#pending")).to_be_hidden()
    await page.close()


# --- 3. live sliders ---------------------------------------------------------------------------


async def test_live_slider_paints_while_dragging_then_runs_full_size(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    big = sample_image(2000, 1500, seed=3)
    path = tmp_path / "big.jpg"
    path.write_bytes(encode(big, "JPEG"))
    await page.set_input_files("#file-input", str(path))
    await expect(page.locator("#image-name")).to_contain_text("big.jpg")
    await page.check("#op-blur")
    await wait_current(page)
    sent = previews(page)

    slider = page.locator("#f-blur-kernelSize-slider")
    await slider.scroll_into_view_if_needed()
    box = await slider.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + 2, y)
    await page.mouse.down()
    states = set()
    for i in range(1, 15):
        await page.mouse.move(box["x"] + box["width"] * i / 15, y)
        await page.wait_for_timeout(120)
        states.add(await hook(page, "freshness.state"))
    during = await stage(page)
    assert during["livePaints"] >= 3, during
    assert "live" in states, states
    await expect(page.locator("#after-caption")).to_contain_text("display copy 1024\u00d7768")
    assert sent == [], "nothing goes to the server while the slider moves"
    await page.mouse.up()

    await wait_current(page)
    kernel = int(await slider.input_value())
    assert (await hook(page, "form"))["blur"]["kernelSize"] == kernel
    result = await hook(page, "result")
    assert (result["width"], result["height"]) == (2000, 1500)
    assert not (await stage(page))["live"]
    assert len(sent) == 1 and f'"kernelSize":{kernel}' in sent[0]
    await page.close()


async def test_a_big_server_job_shows_its_outline_until_the_result(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    """Issue 12: a >= 1 MP rembg job's outline (<= 256 px) is drawn at the image's size,
    the marker says "Outline", and the full result replaces it."""
    page = await open_page(browser, server.url)
    await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
    await upload(page, tmp_path, sample_image(1600, 1200, seed=41), name="big.png")
    await page.check("#run-on-server")
    # The result's download waits until the outline is up: the job may end (its encode is
    # quick on a fast machine) before the page has fetched the outline, and the outline must
    # still show until the result is painted.
    held: list[Route] = []
    released = asyncio.Event()

    async def hold(route: Route) -> None:
        if released.is_set():
            await route.continue_()
        else:
            held.append(route)

    await page.route("**/results/**", hold)
    await page.select_option("#pipeline", "rembg")
    await page.wait_for_function("window.playground.stage.outlinePaints >= 1")
    await expect(page.locator("#after-caption")).to_contain_text("Outline · 256\u00d7192")
    assert await hook(page, "freshness.state") == "outline"
    shown = await stage(page)
    assert shown["outlinePaints"] == 1 and shown["scale"] > 0, shown
    async with asyncio.timeout(30):
        while not held:  # the completed frame may still be on its way
            await asyncio.sleep(0.05)
    released.set()
    for route in held:
        await route.continue_()
    await wait_for_result(page, "server", "rembg:")
    await wait_current(page)
    result = await hook(page, "result")
    assert (result["width"], result["height"]) == (1600, 1200)
    await expect(page.locator("#after-caption")).to_contain_text("Result 1600\u00d71200")
    await page.close()


async def test_server_jobs_start_on_release_and_superseded_rows_end_cancelled(
    slow_server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, slow_server.url)
    await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
    await upload(page, tmp_path, sample_image(seed=33))
    await page.check("#run-on-server")
    held = await blocker(slow_server, 201, HOLD)
    await page.select_option("#pipeline", "rembg")
    first = page.locator('.job[data-state="queued"][data-job-id^="rembg-"]')
    await expect(first).to_be_visible()
    first_id = await first.get_attribute("data-job-id")
    sent = previews(page)

    slider = page.locator("#f-strength-slider")
    await slider.scroll_into_view_if_needed()
    box = await slider.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    await page.mouse.move(box["x"] + box["width"] - 2, y)
    await page.mouse.down()
    for i in range(1, 8):
        await page.mouse.move(box["x"] + box["width"] * (1 - i / 10), y)
        await page.wait_for_timeout(60)
    assert sent == [], "a server job starts on release, not while dragging"
    await page.mouse.up()
    await until(lambda: len(sent) >= 1)
    assert len(sent) == 1, sent

    row = page.locator(f'.job[data-job-id="{first_id}"]')
    await expect(row.locator(".job-state")).to_have_text("cancelled")
    await expect(row.locator(".job-detail")).to_contain_text("superseded by a newer request")
    await release(slow_server, held, 201)
    await wait_for_result(page, "server", "rembg:")
    await wait_current(page)
    await page.close()


# --- 4. never lose your place --------------------------------------------------------------


async def test_the_url_round_trips_through_a_reload(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await page.get_by_role("button", name=SEED_IMAGE).click()
    await expect(page.locator("#image-name")).to_have_text(SEED_IMAGE)
    await page.check("#op-grayscale")
    await page.check("#op-blur")
    await page.fill("#f-blur-kernelSize", "7")
    await wait_current(page)
    await page.wait_for_function("location.search.includes('kernelSize')")
    url = page.url
    assert "image=data%2Fdatasets%2Fimages%2Fval%2Fsample.jpg" in url, url
    key = (await hook(page, "result"))["key"]
    form = await hook(page, "form")

    await page.reload()
    await wait_current(page)
    assert (await hook(page, "result"))["key"] == key
    assert await hook(page, "form") == form
    await expect(page.locator("#f-blur-kernelSize")).to_have_value("7")
    await expect(page.locator("#image-name")).to_have_text(SEED_IMAGE)

    # Shared: a colleague (a new browser context: nothing stored) sees the same preview.
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    other = await context.new_page()
    await other.goto(url)
    await wait_current(other)
    assert (await hook(other, "result"))["key"] == key
    await context.close()

    # An upload comes back from IndexedDB.
    await upload(page, tmp_path, sample_image(seed=44), name="mine.png")
    await wait_current(page)
    await page.wait_for_function("location.search.includes('upload=')")
    key = (await hook(page, "result"))["key"]
    await page.reload()
    await wait_current(page)
    await expect(page.locator("#image-name")).to_have_text("mine.png (uploaded)")
    assert (await hook(page, "result"))["key"] == key
    await page.close()


async def test_a_reload_mid_job_reattaches_and_gets_the_terminal_frame(
    slow_server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, slow_server.url)
    await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
    await upload(page, tmp_path, sample_image(seed=35), name="reload.png")
    await page.check("#run-on-server")
    held = await blocker(slow_server, 202, HOLD)
    await page.select_option("#pipeline", "rembg")
    queued = page.locator('.job[data-state="queued"][data-job-id^="rembg-"]')
    await expect(queued).to_be_visible()
    job_id = await queued.get_attribute("data-job-id")
    assert job_id is not None
    task = await hook(page, "taskId")
    await page.wait_for_function("location.search.includes('server=1')")

    await page.reload()
    await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
    assert await hook(page, "taskId") == task, "the tab keeps its taskId"
    row = page.locator(f'.job[data-job-id="{job_id}"]')
    await expect(row).to_have_attribute("data-state", "queued")
    await expect(row.locator(".job-title")).to_contain_text("reload.png")
    assert next(j for j in await hook(page, "jobs()") if j["id"] == job_id)["restored"]

    await release(slow_server, held, 202)
    await expect(row).to_have_attribute("data-state", "completed")
    frames = await hook(page, "frames()")
    assert "completed" in {f["type"] for f in frames if f["job_id"] == job_id}, frames
    result = await wait_for_result(page, "server", "rembg:")
    assert "rembg-" + result["key"].split(":")[1] == job_id
    await page.close()


async def test_a_file_dropped_anywhere_is_opened(server: Server, browser: Browser) -> None:
    page = await open_page(browser, server.url)
    prevented = await page.evaluate(
        """async () => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array([1])], "x.png", { type: "image/png" }));
            const init = { dataTransfer: transfer, bubbles: true, cancelable: true };
            const enter = new DragEvent("dragenter", init);
            document.querySelector(".results").dispatchEvent(enter);
            const shown = !document.getElementById("drop-overlay").hidden;
            const over = new DragEvent("dragover", init);
            document.body.dispatchEvent(over);
            document.body.dispatchEvent(new DragEvent("dragleave", init));
            return { shown, enter: enter.defaultPrevented, over: over.defaultPrevented };
        }"""
    )
    assert prevented == {"shown": True, "enter": True, "over": True}
    await drop(page, sample_image(seed=9), name="anywhere.png", target=".side")
    await expect(page.locator("#drop-overlay")).to_be_hidden()
    await page.close()


# --- 5. honest progress ------------------------------------------------------------------------


async def test_job_rows_name_the_image_and_settings_with_stages_and_clocks(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await expect(page.locator("#socket-state")).to_have_attribute("data-state", "open")
    await upload(page, tmp_path, sample_image(640, 480, seed=21), name="first.png")
    await page.select_option("#pipeline", "rembg")
    await page.check("#f-alpha_matting")
    row = page.locator(".job").first
    await expect(row.locator(".job-title")).to_have_text("first.png · alpha matting")
    await expect(row.locator(".job-stage")).to_have_text(re.compile(r"step \d of 3"))
    await expect(row.locator(".job-times")).to_contain_text("elapsed")
    await expect(row).to_have_attribute("data-state", "completed")
    await expect(row.locator(".job-meta")).to_contain_text("done in")
    job_id = await row.get_attribute("data-job-id")
    stages = {f["stage"] for f in await hook(page, "frames()") if f["job_id"] == job_id}
    assert {"model", "alpha matting"} <= stages, stages

    # The same settings again: the page knows how long they took, and counts down.
    await upload(page, tmp_path, sample_image(640, 480, seed=22), name="second.png")
    second = page.locator(".job", has_text="second.png")
    await expect(second.locator(".job-times")).to_contain_text(re.compile(r"about \d"))
    first_left = await second.locator(".job-times").text_content()
    await page.wait_for_timeout(1200)
    later = await second.locator(".job-times").text_content()
    assert first_left != later, (first_left, later)
    await expect(second).to_have_attribute("data-state", "completed")
    await page.close()


# --- 6. limits before work -------------------------------------------------------------------


async def test_too_big_files_are_refused_before_upload(browser: Browser, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_image_bytes=50_000, max_pixels=30_000)
    async with running(settings) as srv:
        page = await open_page(browser, srv.url)
        await expect(page.locator("#limits-hint")).to_contain_text("30,000 pixels")
        sent = previews(page)
        built: list[str] = []
        page.on("request", lambda r: built.append(r.url) if "commands" in r.url else None)

        noisy = Image.fromarray(np.random.default_rng(1).integers(0, 255, (300, 300, 3), np.uint8))
        path = tmp_path / "heavy.png"
        path.write_bytes(encode(noisy))
        await page.set_input_files("#file-input", str(path))
        error = page.locator("#image-error")
        await expect(error).to_contain_text("heavy.png")
        await expect(error).to_contain_text("max_image_bytes")

        wide = tmp_path / "wide.png"
        wide.write_bytes(encode(Image.new("RGB", (400, 300), (10, 20, 30))))
        await page.set_input_files("#file-input", str(wide))
        await expect(error).to_contain_text("400\u00d7300 = 120,000 pixels")
        await expect(error).to_contain_text("max_pixels")
        assert sent == [] and built == [], "nothing was sent for a refused file"
        await expect(page.locator("#image-name")).to_have_text("No image yet")

        # A result the server would refuse is refused at the field, before any preview.
        await upload(page, tmp_path, sample_image(120, 90, seed=2))
        await wait_current(page)
        await page.check("#op-resize")
        await page.fill("#f-resize-width", "400")
        await expect(page.locator("#f-resize-width-error")).to_contain_text(
            "the server allows 30,000"
        )
        await expect(page.locator("#freshness")).to_have_attribute("data-state", "invalid")
        await page.close()


async def test_field_errors_sit_at_their_field_in_plain_words(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await upload(page, tmp_path, sample_image(seed=14))
    await page.check("#op-blur")
    await page.check("#op-sharpen")
    await page.fill("#f-blur-kernelSize", "abc")
    await page.fill("#f-sharpen-amount", "9")
    for field, words in (
        ("f-blur-kernelSize", "Enter a whole number"),
        ("f-sharpen-amount", "Must be between 0 and 5"),
    ):
        box = page.locator(f"#{field}")
        await expect(box).to_have_attribute("aria-invalid", "true")
        error = page.locator(f"#{field}-error")
        await expect(error).to_have_text(words)
        assert await error.evaluate(  # in the same field, and read with it
            "(e, id) => e.closest('.field').contains(document.getElementById(id)) &&"
            " document.getElementById(id).getAttribute('aria-describedby').includes(e.id)",
            field,
        )
    assert await hook(page, "form") is not None
    plain = await page.evaluate(
        """async () => {
            const { plainWords } = await import("/js/form.js");
            return [plainWords("Expected `int` >= 1"), plainWords("Expected `int`, got `str`"),
                    plainWords("kernelSize must be odd, got 4", "kernelSize")];
        }"""
    )
    assert plain == ["Must be at least 1", "Enter a whole number", "Must be odd"]
    await page.close()


# --- 7. the first screen ---------------------------------------------------------------------


async def test_the_first_screen_shows_the_example_and_a_browsable_data_root(
    server: Server, browser: Browser
) -> None:
    many = server.settings.data_root / "datasets" / "zz-many"
    many.mkdir(parents=True, exist_ok=True)
    for i in range(30):
        (many / f"shot{i:02d}.png").write_bytes(encode(sample_image(64, 48, seed=i)))
    server.state.datasets.invalidate()

    page = await open_page(browser, server.url, path="/")
    await expect(page.locator("#image-name")).to_have_text(SEED_IMAGE)
    await wait_current(page)
    form = await hook(page, "form")  # the seed's preview
    assert form["autocontrast"] == {"cutoff": 0} and form["blur"] == {"kernelSize": 5}
    status = page.locator("#dataset-status")
    await expect(status).to_have_text("1\u201324 of 31")
    thumb = page.locator(".dataset-item img").first
    await expect(thumb).to_have_js_property("complete", True)
    assert await thumb.evaluate("(img) => img.naturalWidth") > 0
    await page.click("#dataset-next")
    await expect(status).to_have_text("25\u201331 of 31")
    await page.fill("#dataset-q", "shot1")
    await expect(status).to_have_text("1\u201310 of 10 matching \u201cshot1\u201d")
    await page.fill("#dataset-q", "sample")
    await expect(page.locator(".dataset-item")).to_have_count(1)
    await expect(page.locator(".dataset-item").first).to_have_attribute("aria-current", "true")
    await page.close()


# --- 8. forms for people ---------------------------------------------------------------------


async def test_forms_for_people(server: Server, browser: Browser, tmp_path: Path) -> None:
    page = await open_page(browser, server.url)
    await expect(page.locator('label[for="f-blur-kernelSize"]')).to_have_text("Kernel size")
    await expect(page.locator('label[for="f-grayscale-keep_alpha"]')).to_have_text("Keep alpha")

    await page.select_option("#pipeline", "rembg")
    model = page.locator("#f-model")
    assert await model.evaluate("(s) => s.tagName") == "SELECT"
    await expect(model.locator('option[value="u2netp"]')).to_be_enabled()
    missing = model.locator("option:disabled")
    await expect(missing.first).to_contain_text("not downloaded")
    await expect(page.locator("#f-bgcolor")).to_have_attribute("type", "color")
    threshold = page.locator("#f-alpha_matting_foreground_threshold")
    await expect(threshold).to_be_disabled()
    await page.check("#f-alpha_matting")
    await expect(threshold).to_be_enabled()
    await page.check("#f-bgcolor-set")
    await expect(page.locator("#f-bgcolor")).to_be_enabled()
    await page.check("#f-only_mask")
    await expect(page.locator("#f-bgcolor")).to_be_disabled()

    # Crop as handles on the image: drag an edge, the margins follow (and stay editable).
    await page.select_option("#pipeline", "preprocessing")
    await upload(page, tmp_path, sample_image(200, 150, seed=4))
    await page.uncheck("#auto-preview")
    await page.check("#op-crop")
    overlay = page.locator("#crop-overlay")
    await expect(overlay).to_be_visible()
    await expect(overlay.locator(".crop-handle")).to_have_count(8)
    await expect(page.locator("#op-crop-size")).to_have_text(
        re.compile("200\u00d7150 becomes 200\u00d7150")
    )
    right = overlay.locator('[data-edge="right"]')
    handle = await right.bounding_box()
    assert handle is not None
    cx, cy = handle["x"] + handle["width"] / 2, handle["y"] + handle["height"] / 2
    await page.mouse.move(cx, cy)
    await page.mouse.down()
    await page.mouse.move(cx - 60, cy, steps=6)
    await page.mouse.up()
    margin = int(await page.locator("#f-crop-right").input_value())
    scale = (await stage(page))["scale"]
    assert abs(margin - 60 / scale) <= 2, (margin, scale)
    await expect(page.locator("#op-crop-size")).to_have_text(
        re.compile(f"becomes {200 - margin}\u00d7150")
    )
    box_before = await overlay.locator(".crop-box").bounding_box()
    await page.fill("#f-crop-left", "20")
    box_after = await overlay.locator(".crop-box").bounding_box()
    assert box_before and box_after and box_after["x"] > box_before["x"]
    await overlay.locator('[data-edge="top"]').focus()
    await page.keyboard.press("ArrowDown")
    await expect(page.locator("#f-crop-top")).to_have_value("1")
    await page.close()


# --- 9. take the result with you --------------------------------------------------------------


async def test_take_the_result_with_you(server: Server, browser: Browser, tmp_path: Path) -> None:
    page = await open_page(browser, server.url)
    await page.get_by_role("button", name=SEED_IMAGE).click()
    await page.check("#op-grayscale")
    await wait_current(page)
    async with page.expect_download() as info:
        await page.click("#download-result")
    download = await info.value
    assert download.suggested_filename.startswith("sample.preprocessing-")
    saved = np.asarray(Image.open(await download.path()).convert("RGBA"))
    result = await hook(page, "result")
    shown = page_pixels(await hook(page, "resultRGBA()"), result["width"], result["height"])
    assert (saved == shown).all()
    await expect(page.locator("#download-mask")).to_be_disabled()  # nothing was removed
    await expect(page.locator("#folder-command")).to_contain_text("images/val --params")

    await page.select_option("#pipeline", "rembg")
    await wait_for_result(page, "", "rembg:")
    await expect(page.locator("#download-mask")).to_be_enabled()
    async with page.expect_download() as info:
        await page.click("#download-mask")
    mask = np.asarray(Image.open(await (await info.value).path()).convert("L"))
    assert mask.min() < 64 < 192 < mask.max()

    # An upload saved under the data root: its command then runs as it is.
    await upload(page, tmp_path, sample_image(seed=66), name="keep.png")
    await wait_current(page)
    await expect(page.locator("#command")).to_contain_text("IMAGE.png")
    await page.click("#save-upload")
    await expect(page.locator("#takeaway-status")).to_contain_text("data/uploads/")
    await wait_current(page)
    await expect(page.locator("#command")).to_contain_text("uploads/")
    await expect(page.locator("#command")).not_to_contain_text("IMAGE.png")
    await expect(page.locator("#command-warnings li")).to_have_count(0)
    await page.wait_for_function("location.search.includes('image=data%2Fuploads')")
    await page.close()


# --- 10. a calm layout -----------------------------------------------------------------------


async def test_calm_layout_narrow_and_dark(
    server: Server, browser: Browser, tmp_path: Path
) -> None:
    page = await open_page(browser, server.url)
    await upload(page, tmp_path, sample_image(seed=70))
    await wait_current(page)
    diagnostics = page.locator("#diagnostics")
    assert await diagnostics.evaluate("(d) => d.open") is False
    await expect(diagnostics.locator("#client-key")).to_be_hidden()
    await diagnostics.locator("summary").click()
    await expect(diagnostics.locator("#client-key")).to_contain_text("preprocessing:")

    await page.set_viewport_size({"width": 400, "height": 800})
    results = await page.locator(".results").bounding_box()
    controls = await page.locator(".controls").bounding_box()
    assert results and controls and results["y"] < controls["y"], "the result comes first"
    assert results["y"] < 120
    assert await page.evaluate("document.documentElement.scrollWidth") <= 400

    await page.emulate_media(color_scheme="dark")
    background = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    channels = [int(c) for c in re.findall(r"\d+", background)[:3]]
    assert sum(channels) < 150, background
    await page.close()


# --- accessibility -----------------------------------------------------------------------------


async def test_no_serious_accessibility_violations(server: Server, browser: Browser) -> None:
    page = await open_page(browser, server.url, path="/")
    await wait_current(page)
    await page.wait_for_function("document.querySelectorAll('.dataset-item').length > 0")
    assert await axe_violations(page) == []
    await page.select_option("#pipeline", "rembg")
    await page.locator("#diagnostics summary").click()
    assert await axe_violations(page) == []
    await page.set_viewport_size({"width": 400, "height": 800})
    assert await axe_violations(page) == []
    await page.emulate_media(color_scheme="dark")
    await page.set_viewport_size({"width": 1280, "height": 800})
    assert await axe_violations(page) == []
    await page.close()
