"""Screenshots of the page for the README: ``python -m tests.screenshots`` (``just
screenshots``). Run on purpose, never by the test suite: it rewrites
``docs/screenshots/playground.png`` (desktop), ``playground-narrow.png`` (400 px wide) and
``playground-dark.png`` (the system's dark mode), from a real server on a temporary data root.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Literal

import msgspec
from playwright.async_api import Page, async_playwright

from .conftest import CHROMIUM, CHROMIUM_ARGS, encode, make_settings, running, sample_image

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


async def scene(page: Page, url: str) -> None:
    """The first screen, then a background removal run on the server, compared by a wipe."""
    await page.goto(url + "/")
    await page.wait_for_function("window.playground?.freshness.state === 'current'")
    if not await page.evaluate("document.getElementById('datasets').open"):
        await page.click("#datasets summary")  # closed on narrow screens
    await page.get_by_role("button", name="data/datasets/photos/cutout-07.png").click()
    await page.select_option("#pipeline", "rembg")
    await page.fill("#f-strength", "0.9")
    await page.wait_for_function(
        "window.playground.freshness.state === 'current' && "
        "window.playground.result?.source.startsWith('server')",
        timeout=60_000,
    )
    await page.evaluate("document.querySelectorAll('.panel').forEach((p) => (p.scrollTop = 0))")
    await page.wait_for_timeout(300)


async def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # relative roots: the commands shown read as they would for a user
        settings = make_settings(Path(tmp))
        settings = msgspec.structs.replace(
            settings, data_root=Path("data"), outputs_root=Path("outputs")
        )
        photos = settings.data_root / "datasets" / "photos"
        photos.mkdir(parents=True)
        for i in range(12):
            (photos / f"cutout-{i:02d}.png").write_bytes(encode(sample_image(640, 480, seed=i)))
        async with running(settings) as srv, async_playwright() as pw:
            await srv.ready()
            browser = await pw.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
            )
            shots: list[tuple[str, int, Literal["light", "dark"]]] = [
                ("playground.png", 1280, "light"),
                ("playground-narrow.png", 400, "light"),
                ("playground-dark.png", 1280, "dark"),
            ]
            for name, width, scheme in shots:
                page = await browser.new_page(
                    viewport={"width": width, "height": 860}, color_scheme=scheme
                )
                await scene(page, srv.url)
                await page.screenshot(path=str(OUT / name), full_page=width < 900)
                await page.close()
                sys.stdout.write(f"wrote {OUT / name}\n")
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
