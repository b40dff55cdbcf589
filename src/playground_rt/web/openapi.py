"""``/openapi.json``, generated from the Structs in ``schemas`` (never written by hand)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from playground_rt import schemas
from playground_rt.pipeline.registry import PIPELINES
from playground_rt.pipeline.results import JOB_ID_PATTERN


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
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
        "Preview a pipeline (client workers or server).",
        schemas.PipelineRequest,
        schemas.PreviewResponse,
        (400, 401, 404, 413, 422, 429, 503),
    ),
    Operation(
        "post",
        "/api/pipelines/fallback",
        "Run a pipeline on the server and wait for it.",
        schemas.PipelineRequest,
        schemas.FallbackResponse,
        (400, 401, 404, 413, 422, 429, 503),
    ),
    Operation(
        "get",
        "/api/pipelines",
        "Pipelines, their ops and params schemas.",
        None,
        schemas.PipelineList,
        (),
    ),
    Operation(
        "get",
        "/api/jobs/{job_id}",
        "State and result of a job.",
        None,
        schemas.JobView,
        (401, 404),
        params=JOB_ID,
    ),
    Operation(
        "get",
        "/api/jobs/{job_id}/outline",
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
        "Cancel a job (or withdraw one taskId's interest).",
        None,
        schemas.JobView,
        (401, 404),
        params=(*JOB_ID, ("taskId", "query")),
    ),
    Operation(
        "post",
        "/api/commands/build",
        "Build a CLI command from form values.",
        schemas.CommandBuildRequest,
        schemas.CommandBuildResponse,
        (400, 401, 404, 413, 422),
    ),
    Operation("get", "/api/commands", "The command catalog.", None, schemas.CommandList, ()),
    Operation(
        "post",
        "/api/metrics",
        "Telemetry from the page's workers.",
        schemas.MetricsReport,
        schemas.MetricsAccepted,
        (400, 401, 413, 422),
        ok=202,
    ),
    Operation(
        "get",
        "/api/datasets",
        "Images under the data root, paged.",
        None,
        schemas.DatasetPage,
        (401, 422),
        params=(("offset", "query"), ("limit", "query"), ("q", "query")),
    ),
    Operation(
        "get",
        "/api/datasets/file",
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
        "Save an uploaded image under the data root (``created``: false when already there).",
        schemas.UploadRequest,
        schemas.SavedUpload,
        (400, 401, 403, 413, 422),
    ),
    Operation("get", "/healthz", "Alive.", None, schemas.Health, ()),
    Operation(
        "get", "/readyz", "Ready: models loaded, executor running.", None, schemas.Readiness, (503,)
    ),
)


def _content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _operation(op: Operation, refs: dict[type[Any], dict[str, Any]]) -> dict[str, Any]:
    ok_schema = (
        {"type": "string", "format": "binary"} if op.response is bytes else refs[op.response]
    )
    content = {media: {"schema": ok_schema} for media in op.media}
    responses: dict[str, Any] = {str(op.ok): {"description": "OK", "content": content}}
    for status in sorted({*op.errors, *(BODY_ERRORS if op.body is not None else ())}):
        responses[str(status)] = {
            "description": "Error",
            "content": _content(refs[schemas.ErrorBody]),
        }
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": _content(refs[op.body])}
    if op.params:
        out["parameters"] = [
            {"name": name, "in": where, "required": where == "path", "schema": _param(name)}
            for name, where in op.params
        ]
    return out


def _param(name: str) -> dict[str, Any]:
    pattern = PATTERNS.get(name)
    return {"type": "string"} if pattern is None else {"type": "string", "pattern": pattern}


def document(version: str) -> dict[str, Any]:
    types: list[type[Any]] = [schemas.ErrorBody, *(p.params_type for p in PIPELINES.values())]
    types += [t for op in OPERATIONS for t in (op.body, op.response) if t not in (None, bytes)]
    types = list(dict.fromkeys(types))
    refs_list, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(types, refs_list, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "playground-rt", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }


def render(version: str) -> bytes:
    return msgspec.json.encode(document(version))
