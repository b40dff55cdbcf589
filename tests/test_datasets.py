"""The data root as the page sees it: listing with search and paging, thumbnails, saved
uploads, and what ``GET /api/pipelines`` publishes for the page (limits, models, example)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
from PIL import Image

from playground_rt.web.datasets import Datasets

from .conftest import SEED_IMAGE, Server, b64, encode, make_settings, running, sample_image


def touch_images(root: Path, folders: int, per_folder: int) -> None:
    for f in range(folders):
        folder = root / f"set{f:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_folder):
            (folder / f"img{i:05d}.png").touch()


# --- listing ---------------------------------------------------------------------------------


async def test_search_and_paging(server: Server) -> None:
    root = server.settings.data_root / "datasets" / "search"
    for name in ("Cat-01.png", "cat-02.jpg", "dog.png", "notes.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(encode(sample_image(8, 8)))
    server.state.datasets.invalidate()
    page = (await server.http.get("/api/datasets", params={"q": "CAT", "limit": 1})).json()
    assert page["total"] == 2 and page["q"] == "CAT"
    assert page["items"][0]["path"] == "data/datasets/search/Cat-01.png"
    second = (await server.http.get("/api/datasets", params={"q": "cat", "offset": 1})).json()
    assert [i["path"] for i in second["items"]] == ["data/datasets/search/cat-02.jpg"]
    none = (await server.http.get("/api/datasets", params={"q": "notes"})).json()
    assert none["total"] == 0  # not an image suffix
    refused = await server.http.get("/api/datasets", params={"q": "x" * 201})
    assert refused.status_code == 422


async def test_a_hundred_thousand_files_are_scanned_once(tmp_path: Path) -> None:
    touch_images(tmp_path / "data" / "datasets", 100, 1000)
    datasets = Datasets(tmp_path / "data")
    scans = 0
    scan = datasets._scan

    def counted() -> list[object]:
        nonlocal scans
        scans += 1
        return scan()  # type: ignore[return-value]

    datasets._scan = counted  # type: ignore[assignment,method-assign]
    pages = await asyncio.gather(*(datasets.page(i * 50, 50) for i in range(20)))
    assert scans == 1, "concurrent requests share one scan"
    assert all(p.total == 100_000 for p in pages)
    assert pages[3].items[0].path == "data/datasets/set000/img00150.png"
    last = await datasets.page(99_990, 50)
    assert len(last.items) == 10 and last.items[-1].path.endswith("set099/img00999.png")
    found = await datasets.page(0, 50, "set042/img0099")
    assert found.total == 10
    assert scans == 1
    assert datasets._interval >= 5.0  # the next rescan waits longer than one scan takes

    datasets._scanned -= 3600  # stale: answered from the listing it has, rescanned behind
    stale = await datasets.page(0, 1)
    assert stale.total == 100_000 and scans == 1
    assert datasets._scanning is not None
    await datasets._scanning
    assert scans == 2


# --- thumbnails ------------------------------------------------------------------------------


async def test_thumbnail_is_small_cached_and_follows_edits(server: Server) -> None:
    image = server.settings.data_root / "datasets" / "thumbs" / "big.png"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(encode(sample_image(900, 600, seed=2)))
    params = {"path": "data/datasets/thumbs/big.png", "size": "100"}
    first = await server.http.get("/api/datasets/thumbnail", params=params)
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "image/webp"
    thumb = Image.open(io.BytesIO(first.content))
    assert thumb.size == (128, 85)  # the smallest made size at least as big as asked
    folder = server.settings.outputs_root / "thumbnails"
    files = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.webp")}
    again = await server.http.get("/api/datasets/thumbnail", params=params)
    assert again.content == first.content
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.webp")} == files

    image.write_bytes(encode(sample_image(300, 600, seed=3)))  # edited: a new thumbnail
    edited = await server.http.get("/api/datasets/thumbnail", params=params)
    assert Image.open(io.BytesIO(edited.content)).size == (64, 128)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("../etc/passwd", 422, id="outside"),
        pytest.param("data/datasets/nothing.png", 404, id="missing"),
        pytest.param("data/datasets/thumbs/fake.png", 422, id="not-an-image"),
    ],
)
async def test_thumbnail_refusals(server: Server, path: str, status: int) -> None:
    fake = server.settings.data_root / "datasets" / "thumbs" / "fake.png"
    fake.parent.mkdir(parents=True, exist_ok=True)
    fake.write_bytes(b"not a png at all")
    answer = await server.http.get("/api/datasets/thumbnail", params={"path": path})
    assert answer.status_code == status, answer.text
    assert answer.json()["detail"]


async def test_thumbnail_cache_is_bounded(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, thumbnail_cache_bytes=6000, preload_models=[])
    folder = settings.data_root / "datasets" / "many"
    folder.mkdir(parents=True)
    for i in range(8):
        (folder / f"{i}.png").write_bytes(encode(sample_image(200, 150, seed=i)))
    async with running(settings) as srv:
        for i in range(8):
            params = {"path": f"data/datasets/many/{i}.png"}
            answer = await srv.http.get("/api/datasets/thumbnail", params=params)
            assert answer.status_code == 200
        kept = list((settings.outputs_root / "thumbnails").glob("*.webp"))
        assert 1 <= len(kept) < 8
        assert sum(p.stat().st_size for p in kept) <= 6000


# --- uploads ---------------------------------------------------------------------------------


async def test_a_saved_upload_runs_as_its_path(server: Server) -> None:
    data = encode(sample_image(40, 30, seed=77))
    saved = await server.post("/api/datasets/uploads", {"image_base64": b64(data), "name": "x"})
    assert saved.status_code == 200, saved.text
    path = saved.json()["path"]
    assert path.startswith("data/uploads/") and path.endswith(".png")
    assert saved.json()["created"] is True
    again = await server.post("/api/datasets/uploads", {"image_base64": b64(data)})
    assert again.json() == {**saved.json(), "created": False}

    params = {"grayscale": True}
    by_bytes = await server.post(
        "/api/pipelines/preview",
        {"pipeline_id": "preprocessing", "image_base64": b64(data), "params": params},
    )
    by_path = await server.post(
        "/api/pipelines/preview",
        {"pipeline_id": "preprocessing", "image_path": path, "params": params},
    )
    assert by_bytes.json()["cache_key"] == by_path.json()["cache_key"]
    built = await server.post(
        "/api/commands/build",
        {"preview": {"pipeline_id": "preprocessing", "image_path": path, "params": params}},
    )
    assert path in built.json()["command"] and built.json()["warnings"] == []
    listing = (await server.http.get("/api/datasets", params={"q": "uploads/"})).json()
    assert path in [i["path"] for i in listing["items"]]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        pytest.param({"image_base64": b64(b"hello")}, 422, "allowed format", id="not-an-image"),
        pytest.param({"image_base64": "!!"}, 400, "base64", id="bad-base64"),
        pytest.param({"image_base64": ""}, 422, "empty", id="empty"),
    ],
)
async def test_upload_refusals(
    server: Server, body: dict[str, str], status: int, words: str
) -> None:
    answer = await server.post("/api/datasets/uploads", body)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["detail"]


async def test_uploads_can_be_turned_off_and_are_bounded(tmp_path: Path) -> None:
    off = make_settings(tmp_path / "off", save_uploads=False, preload_models=[])
    async with running(off) as srv:
        body = {"image_base64": b64(encode(sample_image()))}
        assert (await srv.post("/api/datasets/uploads", body)).status_code == 403
        limits = (await srv.http.get("/api/pipelines")).json()["limits"]
        assert limits["save_uploads"] is False
    small = make_settings(tmp_path / "small", uploads_max_bytes=2000, preload_models=[])
    async with running(small) as srv:
        body = {"image_base64": b64(encode(sample_image(64, 64, seed=1)))}
        answer = await srv.post("/api/datasets/uploads", body)
        assert answer.status_code == 413 and "uploads_max_bytes" in answer.json()["detail"]


# --- what the page reads first ---------------------------------------------------------------


async def test_pipelines_publish_limits_models_and_an_example(server: Server) -> None:
    listing = (await server.http.get("/api/pipelines")).json()
    settings = server.settings
    assert listing["limits"] == {
        "max_pixels": settings.max_pixels,
        "max_image_bytes": settings.max_image_bytes,
        "max_body_bytes": settings.max_body_bytes,
        "max_side": 8192,
        "save_uploads": True,
    }
    models = {m["name"]: m["present"] for m in listing["models"]}
    assert models["u2netp"] is True and models.get("u2net") is False
    example = listing["example"]
    assert example["image_path"] == SEED_IMAGE
    assert example["params"]["blur"] == {"kernelSize": 5}
    answer = await server.post(
        "/api/pipelines/preview",
        {
            "pipeline_id": example["pipeline_id"],
            "image_path": example["image_path"],
            "params": example["params"],
        },
    )
    assert answer.status_code == 200, answer.text
