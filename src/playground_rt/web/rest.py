"""REST endpoints: decode with msgspec, call ``jobs``/``commands``, encode.

Every error leaves through :func:`error_response` as ``{"detail": ..., "code": ...}``.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response

from playground_rt import errors, schemas
from playground_rt.jobs.job import JobState, Mode, Prepared, Submission
from playground_rt.paths import confine
from playground_rt.pipeline.ops.geometry import MAX_SIDE
from playground_rt.pipeline.results import check_job_id
from playground_rt.pipeline.sessions import SERVABLE_MODELS
from playground_rt.web import auth, uploads
from playground_rt.web.datasets import SUFFIXES
from playground_rt.web.state import AppState
from playground_rt.web.thumbnails import SIZES as THUMBNAIL_SIZES

T = TypeVar("T")

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_encoder = msgspec.json.Encoder()


class MsgspecResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def state(request: Request) -> AppState:
    app_state: AppState = request.app.state.playground
    return app_state


def error_response(exc: errors.PlaygroundError) -> MsgspecResponse:
    headers = {}
    if isinstance(exc, errors.QueueFull):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, errors.RequestTimeout):
        headers["Connection"] = "close"  # the rest of the body may still be on its way
    return MsgspecResponse(
        schemas.ErrorBody(exc.detail, exc.code), status_code=exc.status, headers=headers
    )


async def playground_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, errors.PlaygroundError)
    state(request).telemetry.rejections.labels(exc.code).inc()
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail
    if exc.status_code == 413:
        detail = f"request body exceeds max_body_bytes={state(request).settings.max_body_bytes}"
    return MsgspecResponse(
        schemas.ErrorBody(detail), status_code=exc.status_code, headers=exc.headers
    )


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body, within ``limit`` bytes and ``timeout_s`` seconds (a body dripping in
    byte by byte must not hold a connection forever)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise errors.TooLarge(f"request body of {length} bytes exceeds max_body_bytes={limit}")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise errors.TooLarge(f"request body exceeds max_body_bytes={limit}")
                chunks.append(chunk)
    except TimeoutError:
        raise errors.RequestTimeout(
            f"request body not received within http_body_timeout_s={timeout_s:g}"
        ) from None
    return b"".join(chunks)


def require_json(request: Request) -> None:
    """Only ``application/json`` bodies: a cross-site form or ``text/plain`` POST, which a
    browser sends without a CORS preflight, is refused before anything runs."""
    given = request.headers.get("content-type", "")
    if given.partition(";")[0].strip().lower() != "application/json":
        shown = given[:100] or "none"
        raise errors.UnsupportedMediaType(f"Content-Type must be application/json, got {shown!r}")


async def decode_body(request: Request, kind: type[T]) -> T:
    """The body as ``kind``: 415 unless it is JSON, 400 for malformed JSON, 422 naming the
    ``$.path`` of a bad value."""
    require_json(request)
    settings = state(request).settings
    body = await read_body(request, settings.max_body_bytes, settings.http_body_timeout_s)
    decoder = _decoders.get(kind)
    if decoder is None:
        decoder = _decoders[kind] = msgspec.json.Decoder(kind)
    try:
        result: T = decoder.decode(body)
        return result
    except errors.UNDECODABLE as exc:
        raise errors.undecodable(exc, "body") from None


def client_of(request: Request) -> str | None:
    """Who is asking, for the per-client queue share: the peer's address."""
    return request.client.host if request.client else None


def authorize(request: Request) -> None:
    if not auth.authorized(request, state(request).settings.token):
        raise errors.Unauthorized("missing or wrong bearer token")


# --- endpoints ---------------------------------------------------------------------------


QUEUED_NOTE = "queued on the server; follow job_id over /ws or GET /api/jobs/{job_id}"


async def _submit(
    request: Request, mode: Mode
) -> tuple[schemas.PipelineRequest, AppState, Prepared, Submission]:
    """The one way REST submits a pipeline request (the WebSocket's ``submit`` in ``ws``)."""
    authorize(request)
    body = await decode_body(request, schemas.PipelineRequest)
    app = state(request)
    prepared = await app.jobs.prepare(body)
    sub = await app.jobs.submit(prepared, mode, body.taskId, client_of(request))
    return body, app, prepared, sub


async def preview(request: Request) -> Response:
    body, app, prepared, sub = await _submit(request, "preview")
    job = sub.job
    url = app.jobs.result_url(job.result_path) if job.result_path else None
    return MsgspecResponse(
        schemas.PreviewResponse(
            status="completed" if sub.status == "completed" else "accepted",
            job_id=job.id,
            routed_backend=job.routed_backend,
            cache_key=prepared.cache_key,
            notes=[*sub.notes, QUEUED_NOTE] if sub.queued else sub.notes,
            taskId=body.taskId,
            result_url=url,
            server_reasons=sub.server_reasons,
        )
    )


async def fallback(request: Request) -> Response:
    body, app, prepared, sub = await _submit(request, "fallback")
    job = sub.job
    if not job.terminal and app.settings.fallback_wait_s > 0:
        await app.jobs.wait(job, app.settings.fallback_wait_s)
    view = app.jobs.view(job)
    notes = list(sub.notes)
    if not job.terminal:
        notes.append(f"still {view.state} after {app.settings.fallback_wait_s:g} s; follow job_id")
    elif job.state is JobState.COMPLETED and view.result_path is not None:
        where = "found in the result cache" if job.cache_hit else "ran on the server"
        notes.append(f"{where}; stored under {view.result_path.rpartition('/')[0]}/")
    return MsgspecResponse(
        schemas.FallbackResponse(
            status=view.state if job.terminal else "accepted",  # type: ignore[arg-type]
            routed_backend=job.routed_backend,
            result_path=view.result_path,
            notes=notes,
            job_id=job.id,
            cache_key=prepared.cache_key,
            taskId=body.taskId,
            result_url=view.result_url,
            detail=view.detail,
            code=view.code,
        )
    )


async def job_status(request: Request) -> Response:
    authorize(request)
    app = state(request)
    return MsgspecResponse(await app.jobs.view_of(check_job_id(request.path_params["job_id"])))


async def job_outline(request: Request) -> Response:
    """A running (or recent) big job's outline PNG (``outlines``), 404 when it has none."""
    authorize(request)
    job_id = check_job_id(request.path_params["job_id"])
    data = state(request).jobs.outlines.get(job_id)
    if data is None:
        raise errors.NotFound(
            f"no outline for job {job_id!r}: jobs on images under 1 MP have none, and only "
            "the newest are kept"
        )
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


async def job_cancel(request: Request) -> Response:
    """``?taskId=`` withdraws that task's interest; without it the job is cancelled for
    everyone, which needs the server's token (job ids are public: content hashes)."""
    authorize(request)
    app = state(request)
    job_id = check_job_id(request.path_params["job_id"])
    task_id = request.query_params.get("taskId")
    if task_id is not None:
        job = await app.jobs.withdraw(job_id, task_id)
    elif app.settings.token is None:
        app.jobs.get(job_id)  # 404 first for a job that does not exist
        raise errors.Forbidden(
            "pass ?taskId= to withdraw your own interest; cancelling a job for everyone "
            "needs the server's token (PLAYGROUND_TOKEN)"
        )
    else:
        job = await app.jobs.cancel(job_id)
    return MsgspecResponse(app.jobs.view(job))


SEED_EXAMPLE = ("preprocessing", "datasets/images/val/sample.jpg")
SEED_PARAMS: dict[str, Any] = {"autocontrast": True, "rembg": "client", "blur": {"kernelSize": 5}}
"""The contract's example preview: what the page opens on when the data root has its image."""


async def list_pipelines(request: Request) -> Response:
    """The pipelines, plus what the page needs before any work: the limits, the models
    present, and an example (the seed's image when the data root has it, else its first)."""
    app = state(request)
    settings = app.settings
    limits = schemas.Limits(
        max_pixels=settings.max_pixels,
        max_image_bytes=settings.max_image_bytes,
        max_body_bytes=settings.max_body_bytes,
        max_side=MAX_SIDE,
        save_uploads=settings.save_uploads,
    )
    present = set(app.models.available())
    models = [schemas.ModelChoice(name=n, present=n in present) for n in SERVABLE_MODELS]
    return MsgspecResponse(
        msgspec.structs.replace(
            app.pipeline_list, limits=limits, models=models, example=await _example(app)
        )
    )


async def _example(app: AppState) -> schemas.Example | None:
    pipeline_id, seed = SEED_EXAMPLE
    root = app.settings.data_root
    if os.path.isfile(root / seed):
        path = f"{root.name}/{seed}"
    elif entries := await app.datasets.entries():
        path = entries[0].path
    else:
        return None
    return schemas.Example(pipeline_id=pipeline_id, image_path=path, params=SEED_PARAMS)


async def build_command(request: Request) -> Response:
    authorize(request)
    body = await decode_body(request, schemas.CommandBuildRequest)
    return MsgspecResponse(state(request).commands.build(body))


async def list_commands(request: Request) -> Response:
    return MsgspecResponse(state(request).commands.describe())


async def metrics_report(request: Request) -> Response:
    authorize(request)
    body = await decode_body(request, schemas.MetricsReport)
    state(request).telemetry.client_report(body)
    return MsgspecResponse(schemas.MetricsAccepted(True), status_code=202)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    given = request.query_params.get(name)
    if given is None:
        return default
    try:
        value = int(given)
    except ValueError:
        raise errors.InvalidParams(f"{name} must be an integer, got {given[:40]!r}") from None
    if not low <= value <= high:
        raise errors.InvalidParams(f"{name} must be within {low}..{high}, got {value}")
    return value


async def datasets(request: Request) -> Response:
    """Images under the data root, paged; ``q`` keeps those whose path contains it."""
    authorize(request)
    app = state(request)
    try:
        offset = int(request.query_params.get("offset", "0"))
        limit = int(request.query_params.get("limit", "50"))
    except ValueError:
        raise errors.InvalidParams("offset and limit must be integers") from None
    if offset < 0 or not 1 <= limit <= 500:
        raise errors.InvalidParams("offset must be >= 0 and limit within 1..500")
    q = request.query_params.get("q", "")
    if len(q) > 200:
        raise errors.InvalidParams("q must be at most 200 characters")
    return MsgspecResponse(await app.datasets.page(offset, limit, q))


async def dataset_thumbnail(request: Request) -> Response:
    """A small WebP of one image under the data root (made once, kept on disk, bounded)."""
    authorize(request)
    app = state(request)
    size = _int_param(request, "size", THUMBNAIL_SIZES[0], 16, THUMBNAIL_SIZES[-1])
    path = await app.thumbnails.get(request.query_params.get("path", ""), size)
    return FileResponse(
        path, media_type="image/webp", headers={"Cache-Control": "private, max-age=300"}
    )


async def save_upload(request: Request) -> Response:
    """Keep an uploaded image under the data root, so its command runs as it is."""
    authorize(request)
    body = await decode_body(request, schemas.UploadRequest)
    app = state(request)
    saved = await asyncio.to_thread(uploads.save, app.settings, body)
    if saved.created:
        app.datasets.invalidate()
    return MsgspecResponse(saved)


async def dataset_file(request: Request) -> Response:
    """The bytes of one image under the data root, so the page hashes what the server hashes."""
    authorize(request)
    app = state(request)
    given = request.query_params.get("path", "")
    path = confine(app.settings.data_root, given, field="path")
    # os.path.isfile and the stat below: a name over NAME_MAX raises ENAMETOOLONG, which
    # Path.is_file passes on (3.11); it is a missing file like any other.
    try:
        size = os.stat(path).st_size if os.path.isfile(path) else None
    except OSError:
        size = None
    if path.suffix.lower() not in SUFFIXES or size is None:
        raise errors.NotFound(f"no image {given[:300]!r} under the data root")
    if size > app.settings.max_image_bytes:
        raise errors.TooLarge(
            f"image is larger than max_image_bytes={app.settings.max_image_bytes}"
        )
    return FileResponse(path)


async def healthz(request: Request) -> Response:
    return MsgspecResponse(schemas.Health("ok"))


async def readyz(request: Request) -> Response:
    readiness = state(request).readiness()
    return MsgspecResponse(readiness, status_code=200 if readiness.ready else 503)


async def prometheus(request: Request) -> Response:
    return Response(state(request).telemetry.prometheus(), media_type="text/plain; version=0.0.4")


async def model_file(request: Request) -> Response:
    return await state(request).model_files.endpoint(request)


async def runtime_file(request: Request) -> Response:
    return await state(request).runtime_files.endpoint(request)


async def openapi(request: Request) -> Response:
    return Response(state(request).openapi, media_type="application/json")
