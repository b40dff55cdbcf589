"""The REST routes, declared once: method, path, endpoint and what ``/openapi.json`` says of
each. ``app`` makes its Starlette routes from this table and ``openapi`` renders it, so a
route cannot exist undocumented (``tests/test_routes.py`` checks the app against it). The
WebSocket (``/ws``, ``docs/protocol.md``), the result files (``/results``) and the page are
mounted beside it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from playground_rt import schemas
from playground_rt.pipeline.results import JOB_ID_PATTERN
from playground_rt.web import rest

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    body: type[Any] | None
    response: type[Any]
    errors: tuple[int, ...] = (400, 404, 413, 422)
    ok: int = 200
    params: tuple[tuple[str, str], ...] = ()
    """(name, location) pairs; path params are required, query params optional strings
    (constrained by ``PATTERNS`` where the server checks a shape)."""
    media: tuple[str, ...] = ("application/json",)
    """Media types of the OK answer; a ``bytes`` response is a binary body in any of them."""


IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp")


JOB_ID = (("job_id", "path"),)
PATTERNS = {"job_id": JOB_ID_PATTERN}
BODY_ERRORS = (408, 415)
"""What every operation with a JSON body may also answer: a body too slow, not JSON."""
OPERATIONS = (
    Operation(
        "post",
        "/api/pipelines/preview",
        rest.preview,
        "Preview a pipeline (client workers or server).",
        schemas.PipelineRequest,
        schemas.PreviewResponse,
        (400, 401, 404, 413, 422, 429, 503),
    ),
    Operation(
        "post",
        "/api/pipelines/fallback",
        rest.fallback,
        "Run a pipeline on the server and wait for it.",
        schemas.PipelineRequest,
        schemas.FallbackResponse,
        (400, 401, 404, 413, 422, 429, 503),
    ),
    Operation(
        "get",
        "/api/pipelines",
        rest.list_pipelines,
        "Pipelines, their ops and params schemas.",
        None,
        schemas.PipelineList,
        (),
    ),
    Operation(
        "get",
        "/api/jobs/{job_id}",
        rest.job_status,
        "State and result of a job.",
        None,
        schemas.JobView,
        (401, 404),
        params=JOB_ID,
    ),
    Operation(
        "get",
        "/api/jobs/{job_id}/outline",
        rest.job_outline,
        "A big job's outline: its cut-out at <= 256 px, once the model's mask is known.",
        None,
        bytes,
        (401, 404),
        params=JOB_ID,
        media=("image/png",),
    ),
    Operation(
        "delete",
        "/api/jobs/{job_id}",
        rest.job_cancel,
        "Cancel a job (or withdraw one taskId's interest).",
        None,
        schemas.JobView,
        (401, 404),
        params=(*JOB_ID, ("taskId", "query")),
    ),
    Operation(
        "post",
        "/api/commands/build",
        rest.build_command,
        "Build a CLI command from form values.",
        schemas.CommandBuildRequest,
        schemas.CommandBuildResponse,
        (400, 401, 404, 413, 422),
    ),
    Operation(
        "get",
        "/api/commands",
        rest.list_commands,
        "The command catalog.",
        None,
        schemas.CommandList,
        (),
    ),
    Operation(
        "post",
        "/api/metrics",
        rest.metrics_report,
        "Telemetry from the page's workers.",
        schemas.MetricsReport,
        schemas.MetricsAccepted,
        (400, 401, 413, 422),
        ok=202,
    ),
    Operation(
        "get",
        "/api/datasets",
        rest.datasets,
        "Images under the data root, paged.",
        None,
        schemas.DatasetPage,
        (401, 422),
        params=(("offset", "query"), ("limit", "query"), ("q", "query")),
    ),
    Operation(
        "get",
        "/api/datasets/file",
        rest.dataset_file,
        "The bytes of one image under the data root.",
        None,
        bytes,
        (401, 404, 413, 422),
        params=(("path", "query"),),
        media=IMAGE_TYPES,
    ),
    Operation(
        "get",
        "/api/datasets/thumbnail",
        rest.dataset_thumbnail,
        "A small WebP of one image under the data root (cached, bounded).",
        None,
        bytes,
        (401, 404, 413, 422),
        params=(("path", "query"), ("size", "query")),
        media=("image/webp",),
    ),
    Operation(
        "post",
        "/api/datasets/uploads",
        rest.save_upload,
        "Save an uploaded image under the data root (``created``: false when already there).",
        schemas.UploadRequest,
        schemas.SavedUpload,
        (400, 401, 403, 413, 422),
    ),
    Operation("get", "/healthz", rest.healthz, "Alive.", None, schemas.Health, ()),
    Operation(
        "get",
        "/readyz",
        rest.readyz,
        "Ready: models loaded, executor running.",
        None,
        schemas.Readiness,
        (503,),
    ),
    Operation(
        "get",
        "/metrics",
        rest.prometheus,
        "Prometheus metrics (text exposition format).",
        None,
        str,
        (),
        media=("text/plain",),
    ),
    Operation(
        "get",
        "/openapi.json",
        rest.openapi,
        "This document.",
        None,
        dict,
        (),
    ),
    Operation(
        "get",
        "/models/{model}.onnx",
        rest.model_file,
        "A model file for the page's own model worker (ETag: its md5; immutable).",
        None,
        bytes,
        (404,),
        params=(("model", "path"),),
        media=("application/octet-stream",),
    ),
    Operation(
        "get",
        "/vendor/onnxruntime-web/{file}",
        rest.runtime_file,
        "onnxruntime-web's runtime files, for the page's model worker.",
        None,
        bytes,
        (404,),
        params=(("file", "path"),),
        media=("application/octet-stream", "text/javascript", "application/wasm"),
    ),
)


def http_routes() -> list[Route]:
    """One Starlette route per operation (a GET answers HEAD too)."""
    return [Route(op.path, op.endpoint, methods=[op.method.upper()]) for op in OPERATIONS]
