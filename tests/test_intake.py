"""Intake (``jobs/intake.py``): a request becomes a validated, keyed job or an error, before
anything is queued or handed to the page's workers. First used alone, in this process (a
request in, a ``Prepared`` out); then over HTTP on a real uvicorn, where every route's
image is probed and its result size checked (real images)."""

from __future__ import annotations

import hashlib
import io
import logging
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from playground_rt import errors, schemas
from playground_rt.jobs.intake import Intake
from playground_rt.pipeline import registry
from playground_rt.pipeline.sessions import ModelRegistry

from .conftest import (
    MODEL_HOME,
    SEED_IMAGE,
    Server,
    b64,
    encode,
    make_settings,
    running,
    sample_image,
)
from .test_images import jpeg_claiming, scan_bomb

PREVIEW = "/api/pipelines/preview"
FALLBACK = "/api/pipelines/fallback"
MAX_PIXELS = 4_000_000
CLIENT = {"flip": True, "rembg": "client"}


def png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


PNG = encode(sample_image())


# --- used alone ----------------------------------------------------------------------------


@pytest.fixture
def intake(tmp_path: Path) -> Intake:
    settings = make_settings(tmp_path, max_pixels=MAX_PIXELS)
    return Intake(settings, ModelRegistry(MODEL_HOME, settings.outputs_root, 1))


def request(**fields: Any) -> schemas.PipelineRequest:
    fields.setdefault("pipeline_id", "preprocessing")
    return schemas.PipelineRequest(**fields)


async def test_a_request_is_keyed_by_its_image_bytes_and_canonical_params(intake: Intake) -> None:
    seed = (intake.settings.data_root / "datasets/images/val/sample.jpg").read_bytes()
    by_bytes = await intake.prepare(request(image_base64=b64(seed), params={"blur": True}))
    by_path = await intake.prepare(request(image_path=SEED_IMAGE, params={"blur": {}}))
    assert by_bytes.size == by_path.size == (96, 72)  # from the header, nothing decoded
    assert by_bytes.source.sha256 == by_path.source.sha256 == hashlib.sha256(seed).hexdigest()
    digest = registry.digest(by_bytes.plan, by_bytes.source.sha256)
    assert by_bytes.cache_key == by_path.cache_key == f"preprocessing:{digest}"
    assert by_bytes.job_id == f"preprocessing-{digest}" and by_bytes.notes == ()
    assert by_bytes.kind == "preprocessing"


async def test_a_model_is_checked_at_intake(intake: Intake) -> None:
    """A model the model home lacks, or no rembg model at all: the request's error (a
    4xx), never a failed job."""

    def rembg(**params: Any) -> schemas.PipelineRequest:
        return request(pipeline_id="rembg", image_base64=b64(PNG), params=params)

    assert (await intake.prepare(rembg())).kind == "rembg:u2netp"
    with pytest.raises(errors.ModelUnavailable, match="models pull --model u2net"):
        await intake.prepare(rembg(model="u2net"))
    with pytest.raises(errors.InvalidParams, match="'gpt' is not a rembg model"):
        await intake.prepare(rembg(model="gpt"))


async def test_a_checkpoint_replaces_the_model_and_its_bytes_are_in_the_key(intake: Intake) -> None:
    checkpoint = intake.settings.outputs_root / "mine.onnx"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"first weights")
    rembg = request(pipeline_id="rembg", image_base64=b64(PNG), checkpoint_path="mine.onnx")
    first = await intake.prepare(rembg)
    assert first.checkpoint == checkpoint.resolve() and first.kind == "rembg:custom"
    checkpoint.write_bytes(b"other weights")
    assert (await intake.prepare(rembg)).cache_key != first.cache_key
    unused = await intake.prepare(request(image_base64=b64(PNG), checkpoint_path="mine.onnx"))
    assert unused.checkpoint is None
    assert unused.notes == ("checkpoint_path is not used by pipeline 'preprocessing'",)


@pytest.mark.parametrize(
    ("fields", "error", "fragment"),
    [
        pytest.param({}, errors.InvalidParams, "one of image_base64 and image_path", id="no-image"),
        pytest.param(
            {"image_path": "../etc/passwd"}, errors.PathOutsideRoot, "image_path", id="outside"
        ),
        pytest.param(
            {"image_base64": b64(PNG), "checkpoint_path": "model.pt"},
            errors.InvalidParams,
            "export it to ONNX",
            id="pytorch-checkpoint",
        ),
        pytest.param(
            {"image_base64": b64(PNG), "checkpoint_path": "missing.onnx"},
            errors.NotFound,
            "does not exist",
            id="missing-checkpoint",
        ),
        pytest.param(
            {"image_base64": b64(png_claiming(5000, 5000))},
            errors.TooLarge,
            "max_pixels",
            id="pixel-bomb",
        ),
        pytest.param(
            {"image_base64": b64(PNG), "params": {"resize": {"width": 4000, "height": 1001}}},
            errors.TooLarge,
            "the result would be 4000x1001",
            id="result-too-large",
        ),
    ],
)
async def test_what_intake_refuses(
    intake: Intake, fields: dict[str, Any], error: type[errors.PlaygroundError], fragment: str
) -> None:
    pipeline_id = "rembg" if "checkpoint_path" in fields else "preprocessing"
    with pytest.raises(error, match=fragment):
        await intake.prepare(request(**{"pipeline_id": pipeline_id, **fields}))


async def test_both_images_given_the_base64_one_is_used_and_noted(intake: Intake) -> None:
    both = request(image_base64=b64(PNG), image_path=SEED_IMAGE, params={"flip": True})
    prepared = await intake.prepare(both)
    assert prepared.source.sha256 == hashlib.sha256(PNG).hexdigest()
    assert prepared.notes == ("image_base64 and image_path both given; image_base64 was used",)


# --- over HTTP ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def srv(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    settings = make_settings(tmp_path_factory.mktemp("intake"), max_pixels=MAX_PIXELS)
    async with running(settings) as server:
        await server.ready()
        yield server


@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The server's records, uvicorn's included (its loggers do not propagate to the root)."""
    caplog.set_level(logging.WARNING)
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_logger.removeHandler(caplog.handler)


def body(data: bytes, params: dict[str, Any], pipeline: str = "preprocessing") -> dict[str, Any]:
    return {"pipeline_id": pipeline, "image_base64": b64(data), "params": params}


async def result_of(server: Server, answer: dict[str, Any]) -> np.ndarray[Any, Any]:
    assert answer["status"] == "completed", answer
    png = (await server.http.get(answer["result_url"])).content
    with Image.open(io.BytesIO(png)) as result:
        return np.asarray(result)


# --- D16: client-routed previews are checked like the others -----------------------------

REFUSED = [
    pytest.param(
        b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 422, "allowed format", id="pdf"
    ),
    pytest.param(PNG[: len(PNG) // 2], 422, "could not be decoded", id="truncated-png"),
    pytest.param(png_claiming(5000, 5000), 413, "max_pixels", id="pixel-bomb"),
    pytest.param(scan_bomb(1024, 1024, 500), 422, "MAX_JPEG_SCANS=", id="scan-bomb"),
    pytest.param(jpeg_claiming(1900, 1900), 422, "cannot hold", id="jpeg-sof-lie"),
]


@pytest.mark.parametrize(("data", "status", "fragment"), REFUSED)
@pytest.mark.parametrize("path", [PREVIEW, FALLBACK])
async def test_bad_images_are_refused_on_every_route(
    srv: Server, path: str, data: bytes, status: int, fragment: str
) -> None:
    answer = await srv.post(path, body(data, CLIENT))
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["detail"]


async def test_a_client_routed_result_over_max_pixels_is_refused(srv: Server) -> None:
    params = {"resize": {"width": 4000, "height": 1001}, "rembg": "client"}
    answer = await srv.post(PREVIEW, body(PNG, params))
    assert answer.status_code == 413, answer.text
    detail = answer.json()["detail"]
    assert detail == f"the result would be 4000x1001 = 4004000 pixels; max_pixels={MAX_PIXELS}"


async def test_a_good_client_routed_preview_is_still_left_to_the_page(srv: Server) -> None:
    answer = await srv.post(PREVIEW, body(PNG, CLIENT))
    assert answer.status_code == 200, answer.text
    assert answer.json()["routed_backend"] == "client-workers"


# --- D13: result sides, checked at intake -----------------------------------------------


@pytest.mark.parametrize(
    ("size", "resize", "gives"),
    [
        pytest.param((1, 20_000), {"width": 8}, "8x160000", id="1x20000-width-8"),
        pytest.param((20_000, 1), {"height": 8}, "160000x8", id="20000x1-height-8"),
    ],
)
@pytest.mark.parametrize("path", [PREVIEW, FALLBACK])
async def test_a_resize_side_over_8192_is_refused_at_intake(
    srv: Server, path: str, size: tuple[int, int], resize: dict[str, int], gives: str
) -> None:
    thin = encode(Image.new("RGB", size, (10, 20, 30)))
    answer = await srv.post(path, body(thin, {"resize": resize, "rembg": "client"}))
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert f"gives {gives}; each side must be at most 8192" in detail


async def test_a_crop_leaving_nothing_is_refused_at_intake(srv: Server) -> None:
    params = {"crop": {"left": 96}, "resize": {"width": 8}}  # was a ZeroDivisionError: 500
    answer = await srv.post(FALLBACK, body(PNG, params))
    assert answer.status_code == 422, answer.text
    assert "leaves nothing" in answer.json()["detail"]


# --- D12: matting a 1x1 image ------------------------------------------------------------


async def test_matting_a_1x1_image_completes_without_a_traceback(
    srv: Server, server_logs: pytest.LogCaptureFixture
) -> None:
    for seed in range(3):
        tiny = encode(Image.new("RGB", (1, 1), (seed, 7, 9)))
        answer = await srv.post(FALLBACK, body(tiny, {"alpha_matting": True}, "rembg"))
        assert answer.status_code == 200, answer.text
        assert (await result_of(srv, answer.json())).shape == (1, 1, 4)
    assert not [r.getMessage() for r in server_logs.records if r.levelno >= logging.ERROR]


# --- D8 / D9 / D17: what the server decodes ---------------------------------------------


async def test_16_bit_grey_is_not_white(srv: Server) -> None:
    grey = np.linspace(0, 65535, 96 * 72).reshape(72, 96).astype(np.uint16)
    answer = await srv.post(FALLBACK, body(encode(Image.fromarray(grey)), {"flip": True}))
    result = await result_of(srv, answer.json())
    assert np.array_equal(result[..., 0], (grey >> 8)[:, ::-1])


async def test_webp_exif_orientation_is_not_applied(srv: Server) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    sample_image(96, 72).save(buffer, "WEBP", exif=exif.tobytes(), lossless=True)
    answer = await srv.post(FALLBACK, body(buffer.getvalue(), {"flip": True}))
    assert (await result_of(srv, answer.json())).shape[:2] == (72, 96)


async def test_a_path_image_is_probed_too(srv: Server) -> None:
    root = srv.settings.data_root
    (root / "lie.jpg").write_bytes(jpeg_claiming(1900, 1900))
    answer = await srv.post(PREVIEW, {"pipeline_id": "preprocessing", "image_path": "lie.jpg"})
    assert answer.status_code == 422, answer.text
    assert "cannot hold" in answer.json()["detail"]
