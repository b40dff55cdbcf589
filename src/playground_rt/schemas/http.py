"""The REST bodies: pipelines and their jobs, commands, health and telemetry, datasets."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from playground_rt.schemas.common import (
    JobState,
    ModelName,
    NonNegInt,
    PipelineId,
    TaskId,
)

# --- pipelines ----------------------------------------------------------------------------


class PipelineRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Body of ``POST /api/pipelines/preview`` and ``/fallback`` (and of the ``submit`` frame).

    Exactly one of ``image_base64`` and ``image_path`` is required. ``params`` is validated
    against the pipeline's own schema (``GET /api/pipelines``).
    """

    pipeline_id: PipelineId
    image_base64: str | None = None
    image_path: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    checkpoint_path: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    taskId: TaskId | None = None


class PreviewResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``status`` is ``accepted`` while a job is queued or routed to the client's workers,
    ``completed`` when the result already exists (``result_url``)."""

    status: Literal["accepted", "completed"]
    job_id: str
    routed_backend: str
    cache_key: str
    notes: list[str]
    taskId: str | None = None
    result_url: str | None = None
    server_reasons: list[str] = msgspec.field(default_factory=list)
    """Why a preview the page could run goes to the server (each a short reason; absent
    when none): the notes say the same for people, this is for the page."""


class FallbackResponse(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``result_path`` is set once the job completed within the server's wait; otherwise
    ``status`` is ``accepted`` and the job is followed by ``job_id`` (REST or WebSocket)."""

    status: Literal["accepted", "completed", "failed", "cancelled"]
    routed_backend: str
    result_path: str | None
    notes: list[str]
    job_id: str
    cache_key: str
    taskId: str | None = None
    result_url: str | None = None
    detail: str | None = None
    code: str | None = None
    """With ``failed``: the kind of failure, as in error bodies (``disk_full``...)."""


class JobView(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``GET /api/jobs/{job_id}``."""

    job_id: str
    pipeline_id: str
    cache_key: str
    state: JobState
    routed_backend: str
    cache_hit: bool
    position: int | None = None
    eta_ms: int | None = None
    result_url: str | None = None
    result_path: str | None = None
    detail: str | None = None
    code: str | None = None
    """With ``failed``: the kind of failure, as in error bodies (``disk_full``...)."""
    durations: dict[str, float] = msgspec.field(default_factory=dict)
    threads: int | None = None
    """onnxruntime threads the job's model ran on: all cores when it had the pool alone."""
    outline_url: str | None = None
    """While it runs, once its model's mask is known: its outline (as in ``progress``)."""


class OpInfo(msgspec.Struct, kw_only=True):
    """An op of a pipeline. ``client``: the page can run it (``client_models``: the models
    the page runs itself, for an op that needs one); ``placed``: its key in ``params`` also
    takes ``"client"``/``"server"`` (on with its defaults, placement given)."""

    name: str
    summary: str
    client: bool
    params_schema: dict[str, Any]
    placed: bool = False
    client_models: list[str] = msgspec.field(default_factory=list)


class PipelineInfo(msgspec.Struct, kw_only=True):
    """A pipeline, its ops in order and the JSON Schema of its ``params``.

    ``flat``: the single op's params sit at the top level of ``params`` (``rembg``); else
    each op is a key. ``routing_keys``: the keys that only say where work runs (never part
    of the cache key)."""

    id: str
    version: str
    summary: str
    ops: list[OpInfo]
    params_schema: dict[str, Any]
    flat: bool = False
    routing_keys: list[str] = msgspec.field(default_factory=list)


class Limits(msgspec.Struct, kw_only=True):
    """What the server refuses, published so the page refuses it first (before an upload,
    before a preview): the same settings the server and ``playground-rt run`` check."""

    max_pixels: int
    """Pixels of an image (from its header) and of a result."""
    max_image_bytes: int
    max_body_bytes: int
    """A request body: an uploaded image travels in it as base64 (4/3 of its bytes)."""
    max_side: int
    """The longest side a resize may produce."""
    save_uploads: bool
    """Whether ``POST /api/datasets/uploads`` may save an upload under the data root."""


class ModelChoice(msgspec.Struct, kw_only=True):
    """A rembg model the server knows, and whether its file is present (usable now)."""

    name: str
    present: bool


class Example(msgspec.Struct, kw_only=True):
    """What the page opens on: an image under the data root and the seed's preview."""

    pipeline_id: str
    image_path: str
    params: dict[str, Any]


class PageConstants(msgspec.Struct, kw_only=True):
    """What the page must agree on with the server, each value read from its one home in
    Python: the page takes them from here at start-up instead of keeping copies."""

    cache_format: str
    """The first line of the text a cache key hashes (``registry.CACHE_FORMAT``)."""
    route_switch: str
    """The routing key every pipeline takes: the page sets it to ``"client"`` or
    ``"server"`` (``"server"`` is the contract's fallback)."""
    odd_params: dict[str, list[str]]
    """Per op, the integer params that must be odd (blur's ``kernelSize``)."""
    close_codes: dict[str, int]
    """The hub's WebSocket close codes by name (``hub.connection.Close``)."""


class PipelineList(msgspec.Struct):
    pipelines: list[PipelineInfo]
    canonical_form: str
    constants: PageConstants
    limits: Limits | None = None
    models: list[ModelChoice] = msgspec.field(default_factory=list)
    example: Example | None = None


# --- commands -----------------------------------------------------------------------------


class CommandBuildRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Form values for one catalog command, or a preview request to reproduce."""

    command: Annotated[str, msgspec.Meta(max_length=200)] = "playground-rt run"
    values: dict[str, Any] = msgspec.field(default_factory=dict)
    preview: PipelineRequest | None = None


class CommandBuildResponse(msgspec.Struct, kw_only=True):
    command: str
    argv: list[str]
    warnings: list[str]


class CommandOptionInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    flag: str
    type: Literal["str", "int", "float", "bool", "path", "choice"]
    help: str = ""
    default: Any = None
    choices: list[str] | None = None
    required: bool = False
    min: float | None = None
    max: float | None = None
    root: Literal["data", "outputs"] | None = None
    """Paths relative to this server root."""
    false_flag: str | None = None
    """For a bool whose default is true: the flag that turns it off."""


class CommandInfo(msgspec.Struct, kw_only=True):
    id: str
    program: str
    subcommand: str | None
    summary: str
    options: list[CommandOptionInfo]


class CommandList(msgspec.Struct):
    commands: list[CommandInfo]


# --- telemetry and health -----------------------------------------------------------------


class ClientModel(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A model the page runs itself (onnxruntime-web) and how fast it runs there."""

    backend: Literal["wasm", "webgpu"]
    threads: Annotated[int, msgspec.Meta(ge=0, le=256)] = 0
    infer_ms: Annotated[float, msgspec.Meta(ge=0)] | None = None
    """Mean of the recent runs (the model's ``run`` alone), None before the first."""
    runs: NonNegInt = 0


class MetricsReport(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Telemetry from the page's Web Workers (``POST /api/metrics`` or a ``telemetry`` frame)."""

    source: Annotated[str, msgspec.Meta(max_length=64)] = "client-workers"
    taskId: TaskId | None = None
    queue_depth: NonNegInt = 0
    running: NonNegInt = 0
    workers: NonNegInt = 0
    durations_ms: Annotated[
        dict[Annotated[str, msgspec.Meta(max_length=64)], float], msgspec.Meta(max_length=32)
    ] = msgspec.field(default_factory=dict)
    models: Annotated[dict[ModelName, ClientModel], msgspec.Meta(max_length=4)] = msgspec.field(
        default_factory=dict
    )


class MetricsAccepted(msgspec.Struct):
    accepted: bool


class Health(msgspec.Struct):
    status: Literal["ok"]


class ModelStatus(msgspec.Struct, frozen=True):
    """A loaded session (``pipeline.sessions`` makes these; ``/readyz`` lists them)."""

    model: str
    """The rembg model name, or ``u2net_custom`` for a request's own ``.onnx``."""
    providers: list[str]
    """The execution providers the session really got, best first (not the ones asked for)."""
    path: str
    """The model file the session was created from."""
    md5: str | None
    """The file's md5 for named models; ``None`` for custom files."""


class Readiness(msgspec.Struct, kw_only=True):
    ready: bool
    models: list[ModelStatus]
    available_providers: list[str]
    workers: int
    intra_op_threads: int
    queue_size: int


class DatasetEntry(msgspec.Struct):
    path: str
    bytes: int


class DatasetPage(msgspec.Struct, kw_only=True):
    """``GET /api/datasets``: images under the data root, sorted by path; with ``q``, only
    those whose path contains it (case-insensitive), ``total`` counting the matches."""

    items: list[DatasetEntry]
    total: int
    offset: int
    limit: int
    q: str = ""


class UploadRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``POST /api/datasets/uploads``: an uploaded image to keep under the data root, so a
    command naming its path runs as it is."""

    image_base64: str
    name: Annotated[str, msgspec.Meta(max_length=255)] = ""
    """The file's own name, for the page's label only: the saved name is the content's hash."""


class SavedUpload(msgspec.Struct, kw_only=True):
    """Where the upload now lives (``image_path`` for previews and commands)."""

    path: str
    bytes: int
    created: bool
    """False when the same bytes were saved before."""
