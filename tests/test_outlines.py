"""Outlines: a big job's cut-out at <= 256 px in a ``progress`` frame once its mask is known,
none for small jobs, and a store bounded by bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from playground_rt import schemas
from playground_rt.pipeline import outlines

from .conftest import TERMINAL_STATES, Server, b64, encode, poll, sample_image
from .hubfixtures import Client, client

BIG = (1280, 800)  # 1.02 MP: over outlines.MIN_PIXELS


def body(image: Image.Image, task_id: str, **params: Any) -> dict[str, Any]:
    return {
        "pipeline_id": "rembg",
        "image_base64": b64(encode(image)),
        "params": params,
        "taskId": task_id,
    }


async def run_followed(server: Server, tab: Client, request: dict[str, Any]) -> str:
    """Submit ``request`` (its taskId followed by ``tab``); its job id once it completed."""
    answer = (await server.post("/api/pipelines/preview", request)).json()
    job_id: str = answer["job_id"]
    await tab.wait(schemas.Completed, lambda f: f.job_id == job_id, timeout=120)
    await tab.barrier()
    return job_id


def outline_urls(tab: Client, job_id: str) -> list[str | None]:
    return [f.outline_url for f in tab.job_frames(job_id) if isinstance(f, schemas.Progress)]


async def test_a_big_job_shows_its_outline_before_its_result(server: Server) -> None:
    image = sample_image(*BIG, seed=21)
    async with client(server.ws_url) as tab:
        await tab.ack({"type": "subscribe", "taskId": "big"})
        job_id = await run_followed(server, tab, body(image, "big", strength=0.85))
        urls = outline_urls(tab, job_id)
        assert outlines.url(job_id) in urls, urls
        first = urls.index(outlines.url(job_id))
        assert all(url == outlines.url(job_id) for url in urls[first:]), urls
        kinds = [type(f).__name__ for f in tab.job_frames(job_id)]
        assert kinds[-1] == "Completed"

        answer = await server.http.get(outlines.url(job_id))
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
        outline = Image.open(io.BytesIO(answer.content))
        assert outline.format == "PNG" and outline.mode == "RGBA"
        assert outline.size == (256, 160)
        alpha = np.asarray(outline.getchannel("A")).astype(int)
        assert alpha[80, 128] > 200 and alpha[5, 5] < 60  # the disc kept, the corner removed

        # the same image again with another strength: the mask is kept, the outline too
        again = await run_followed(server, tab, body(image, "big", strength=0.4))
        assert outlines.url(again) in outline_urls(tab, again)
        view = (await server.http.get(f"/api/jobs/{again}")).json()
        assert "outline" in view["durations"]


async def test_a_polling_client_finds_the_outline_in_the_job_view(server: Server) -> None:
    request = body(sample_image(*BIG, seed=22), "poll", strength=0.85)
    job_id = (await server.post("/api/pipelines/preview", request)).json()["job_id"]
    seen: set[str | None] = set()

    async def look() -> dict[str, Any]:
        view = await server.job(job_id)
        seen.add(view.get("outline_url"))
        return view

    view = await poll(look, lambda v: v["state"] in TERMINAL_STATES, "the job ended", 60, 0.005)
    assert view["state"] == "completed" and "outline_url" not in view
    assert outlines.url(job_id) in seen


async def test_a_small_job_has_no_outline(server: Server) -> None:
    async with client(server.ws_url) as tab:
        await tab.ack({"type": "subscribe", "taskId": "small"})
        job_id = await run_followed(server, tab, body(sample_image(320, 240), "small"))
        assert outline_urls(tab, job_id) and not any(outline_urls(tab, job_id))
    answer = await server.http.get(outlines.url(job_id))
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"


def test_the_outline_is_the_cutout_scaled_to_256() -> None:
    image = sample_image(1000, 400, seed=3)
    mask = Image.new("L", image.size, 0)
    mask.paste(255, (500, 0, 1000, 400))
    outline = Image.open(io.BytesIO(outlines.render(image, mask)))
    assert outline.size == (256, 102) and outline.mode == "RGBA"
    alpha = np.asarray(outline.getchannel("A"))
    assert alpha[:, :120].max() == 0 and alpha[:, 140:].min() == 255
    small = Image.open(io.BytesIO(outlines.render(sample_image(60, 40), Image.new("L", (60, 40)))))
    assert small.size == (60, 40)  # never scaled up


def test_the_store_keeps_the_newest_outlines_within_its_bytes() -> None:
    store = outlines.OutlineStore(max_bytes=1000)
    for index in range(10):
        store.put(f"job-{index}", bytes(300))
    assert store.nbytes <= 1000 and len(store) == 3
    assert store.get("job-9") is not None and store.get("job-6") is None
    store.put("huge", bytes(1001))  # bigger than the whole bound: not kept
    assert store.get("huge") is None and store.nbytes <= 1000
    store.put("job-9", bytes(10))  # replaced, its bytes counted once
    assert store.nbytes == 610
