"""One decoding rule for the page and the server, checked in Debian's Chromium.

``images.py`` documents the rule (orientation from JPEG APP1 and PNG ``eXIf`` only, 16-bit
samples to their high byte, translucent images computed by the server). Here Chromium's
own decode (``imaging.js``'s ``decodeBlob``, what the page's workers run) is compared with
``images.decode`` for each case, then the page is driven as a user would: where the page
computes a preview itself its pixels must equal the server's for the same cache_key, and
where it cannot (alpha below 255) it must have routed the request to the server.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from playwright.async_api import Browser, Page, async_playwright

from playground_rt.pipeline import images

from .conftest import CHROMIUM, CHROMIUM_ARGS, Server, b64, encode, sample_image
from .test_images import XMP_6, exif, exif_after_idat_png, raw_profile_png, saved, xmp_png
from .test_page import hook, open_page, page_pixels, wait_for_result

pytestmark = pytest.mark.browser

LIMITS = images.Limits(max_image_bytes=20 << 20, max_pixels=16_800_000)
BASE = sample_image(96, 72)


def palette_trns() -> bytes:
    palette = BASE.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return saved(palette, "PNG", transparency=0)


def grey_alpha() -> bytes:
    la = BASE.convert("L")
    la.putalpha(Image.linear_gradient("L").resize((96, 72)))
    return saved(la, "PNG")


def grey16() -> bytes:
    ramp = np.linspace(0, 65535, 96 * 72).reshape(72, 96).astype(np.uint16)
    return encode(Image.fromarray(ramp))


def xmp_jpeg() -> bytes:
    return saved(BASE, "JPEG", xmp=XMP_6.encode(), quality=95)


def png_with_text_orientation() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Orientation", "6")  # a plain text chunk: nobody reads it
    return saved(BASE, "PNG", pnginfo=info)


FILES: dict[str, bytes] = {
    "exif6.jpg": saved(BASE, "JPEG", exif=exif(6), quality=95),
    "exif6.png": saved(BASE, "PNG", exif=exif(6)),
    "exif6.webp": saved(BASE, "WEBP", exif=exif(6), lossless=True),
    "xmp6.png": xmp_png(),
    "xmp6.jpg": xmp_jpeg(),
    "rawprofile6.png": raw_profile_png(),
    "exif6-after-idat.png": exif_after_idat_png(),
    "text6.png": png_with_text_orientation(),
    "gray16.png": grey16(),
    "palette_trns.png": palette_trns(),
    "la.png": grey_alpha(),
}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run `bash .ci/system-deps` (or `.ci/run`)")
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


async def chromium_decode(page: Page, data: bytes) -> dict[str, Any]:
    """The page's own decode (imaging.js) of ``data``, pixels as base64 RGBA."""
    decoded: dict[str, Any] = await page.evaluate(
        """async (encoded) => {
            const { decodeBlob, bytesToBase64 } = await import("/js/imaging.js");
            const bytes = Uint8Array.from(atob(encoded), (c) => c.charCodeAt(0));
            const img = await decodeBlob(new Blob([bytes]));
            return { width: img.width, height: img.height, translucent: img.translucent,
                     data: bytesToBase64(img.data) };
        }""",
        b64(data),
    )
    return decoded


async def test_chromium_decodes_by_the_servers_rule(server: Server, browser: Browser) -> None:
    page = await open_page(browser, server.url)
    for name, data in FILES.items():
        mine = images.decode(data, LIMITS)
        theirs = await chromium_decode(page, data)
        assert (theirs["width"], theirs["height"]) == mine.size, name
        assert images.probe(data, LIMITS).size == mine.size, name
        rgba = np.asarray(mine.convert("RGBA"))
        translucent = bool((rgba[..., 3] < 255).any())
        assert theirs["translucent"] is translucent, name
        if not translucent:  # the canvas keeps opaque pixels exactly
            shown = page_pixels(theirs["data"], theirs["width"], theirs["height"])
            assert np.array_equal(shown, rgba), name
    await page.close()


# --- the page against the server ----------------------------------------------------------

PAGE_CASES = [
    pytest.param("exif6.webp", {"flip": True}, "client-workers", id="webp-exif6-flip"),
    pytest.param("xmp6.png", {"flip": True}, "client-workers", id="xmp6-png-flip"),
    pytest.param("rawprofile6.png", {"flip": True}, "client-workers", id="raw-profile-flip"),
    pytest.param("exif6.jpg", {"flip": True}, "client-workers", id="jpeg-exif6-flip"),
    pytest.param("gray16.png", {"autocontrast": True}, "client-workers", id="gray16-contrast"),
    pytest.param("palette_trns.png", {"blur": {"kernelSize": 5}}, "server", id="trns-blur5"),
    pytest.param("la.png", {"blur": {"kernelSize": 3}}, "server", id="la-blur3"),
]


async def clear_ops(page: Page) -> None:
    """Uncheck the ops the page opens with (the seed's preview: autocontrast, rembg, blur)."""
    checked = page.locator('fieldset.op input[id^="op-"]:checked')
    while await checked.count():
        await checked.first.uncheck()


async def set_params(page: Page, params: dict[str, Any]) -> None:
    for op, value in params.items():
        await page.check(f"#op-{op}")
        if isinstance(value, dict):
            for name, number in value.items():
                await page.fill(f"#f-{op}-{name}", str(number))


@pytest.mark.parametrize(("name", "params", "computed_by"), PAGE_CASES)
async def test_the_page_and_the_server_agree_under_one_cache_key(
    server: Server,
    browser: Browser,
    tmp_path: Path,
    name: str,
    params: dict[str, Any],
    computed_by: str,
) -> None:
    data = FILES[name]
    body = {"pipeline_id": "preprocessing", "image_base64": b64(data), "params": params}
    page = await open_page(browser, server.url)
    await clear_ops(page)  # these cases are about decoding: no model run in the way
    path = tmp_path / name
    path.write_bytes(data)
    await page.set_input_files("#file-input", str(path))
    await page.wait_for_function(
        "document.querySelector('#image-name').textContent.includes('uploaded')"
    )
    await set_params(page, params)
    # The page runs first: a server result on disk would be shown as a cache hit.
    routed = {**body, "params": {**params, "background_removal": "client"}}  # keyed, never run
    key = (await server.post("/api/pipelines/preview", routed)).json()["cache_key"]
    result = await wait_for_result(page, computed_by, key)
    answer = (await server.post("/api/pipelines/fallback", body)).json()
    assert answer["status"] == "completed" and answer["cache_key"] == key, answer
    with Image.open(io.BytesIO((await server.http.get(answer["result_url"])).content)) as png:
        expected = np.asarray(png.convert("RGBA"))
    assert await hook(page, "keyMatch") is True
    shown = page_pixels(await hook(page, "resultRGBA()"), result["width"], result["height"])
    assert shown.shape == expected.shape, name
    if computed_by == "client-workers":
        assert np.array_equal(shown, expected), name  # pixel-exact
    else:
        assert await hook(page, "routedBackend") == "server-preprocessing"
        opaque = expected[..., 3] == 255  # the canvas shows opaque pixels exactly
        assert np.array_equal(shown[opaque], expected[opaque]), name
    await page.close()
