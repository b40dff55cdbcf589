"""Every request, response, error body and WebSocket frame, as ``msgspec.Struct``.

These classes are the wire format: ``api`` and ``hub`` decode into them at the edge and
encode from them, and ``openapi`` generates ``/openapi.json`` from them. Docstrings and
``Meta(description=...)`` become the schema's descriptions.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

PipelineId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[a-z][a-z0-9_-]{0,63}$", description="A pipeline of GET /api/pipelines."
    ),
]
TaskId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z0-9_.:-]{1,128}$",
        description="The client's correlation id, echoed on every response and frame of the job.",
    ),
]
JobId = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_-]{0,63}-[0-9a-f]{32}$")]
JobState = Literal["queued", "running", "completed", "failed", "cancelled"]
Cursor = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[0-9]{1,20}-[0-9]{1,20}$",
        description="A job frame's place in the cluster's history (a Redis stream id).",
    ),
]


class ErrorBody(msgspec.Struct, omit_defaults=True):
    """Every 4xx/5xx answer."""

    detail: str
    code: str | None = None


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

NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]


ModelName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_\-]{1,64}$")]


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


# --- WebSocket frames ---------------------------------------------------------------------
# JSON text frames, a tagged union on "type". Server frames carry the hub's ``seq``
# (monotonic per hub) and ``epoch`` (new each time a hub starts), so a client tells a
# restarted server from a gap.


class _ClientFrame(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=True):
    """Base of client → server frames; ``ref`` is echoed on the ``ack``/``error`` answer."""

    ref: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Subscribe(_ClientFrame, tag="subscribe", kw_only=True):
    """Follow a task, a job or a channel (``telemetry``)."""

    taskId: TaskId | None = None
    job_id: JobId | None = None
    channel: Literal["telemetry"] | None = None


class Unsubscribe(_ClientFrame, tag="unsubscribe", kw_only=True):
    taskId: TaskId | None = None
    job_id: JobId | None = None
    channel: Literal["telemetry"] | None = None


class Submit(PipelineRequest, tag="submit", tag_field="type", kw_only=True):
    """The REST preview/fallback body; the socket is subscribed to the job's taskId.

    (A ``PipelineRequest`` with the frame's tag: a Struct cannot have two bases with fields.)
    """

    ref: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    mode: Literal["preview", "fallback"] = "fallback"


class Cancel(_ClientFrame, tag="cancel", kw_only=True):
    job_id: JobId | None = None
    taskId: TaskId | None = None


class TelemetryIn(MetricsReport, tag="telemetry", tag_field="type", kw_only=True):
    """The ``POST /api/metrics`` body as a frame."""

    ref: Annotated[str, msgspec.Meta(max_length=64)] | None = None


class Resume(_ClientFrame, tag="resume", kw_only=True):
    """Replay what this client missed: frames after ``last_seq`` of ``epoch``.

    The socket is (re)subscribed to ``taskIds`` and ``job_ids`` first: a reconnecting
    client sends ``resume`` as its first frame and gets its subscriptions back with it.
    """

    last_seq: Annotated[int, msgspec.Meta(ge=0)]
    epoch: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    taskIds: Annotated[list[TaskId], msgspec.Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    job_ids: Annotated[list[JobId], msgspec.Meta(max_length=256)] = msgspec.field(
        default_factory=list
    )
    cursor: Cursor | None = None
    """The ``cursor`` of the last job frame received (remote mode): on another node (another
    ``epoch``) the replay starts after it, from the cluster's history, instead of a ``gap``."""


class Ping(_ClientFrame, tag="ping", kw_only=True):
    pass


ClientFrame = Subscribe | Unsubscribe | Submit | Cancel | TelemetryIn | Resume | Ping


class _ServerFrame(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True):
    seq: int = 0
    epoch: str = ""


class _JobFrame(_ServerFrame, kw_only=True):
    job_id: str
    taskId: str | None = None
    cursor: str | None = None
    """Remote mode only: the frame's place in the cluster's history, the same on every node
    and increasing in the order frames were produced; ``resume`` with the last one received
    replays the rest on any node."""


class Ack(_ServerFrame, tag="ack", kw_only=True):
    ref: str | None = None
    job_id: str | None = None
    taskId: str | None = None
    cache_key: str | None = None
    routed_backend: str | None = None


class Queued(_JobFrame, tag="queued", kw_only=True):
    position: int
    eta_ms: int


class Progress(_JobFrame, tag="progress", kw_only=True):
    stage: str
    step: int
    total: int
    outline_url: str | None = None
    """A small preview (PNG, at most 256 px on its long side: the cut-out on the model's
    mask), ``GET`` it while the job finishes: set on every progress frame once the mask is
    known, for jobs on images of 1 MP or more; absent otherwise. Kept a while only (404
    after)."""


class Completed(_JobFrame, tag="completed", kw_only=True):
    result_url: str
    cache_hit: bool
    durations: dict[str, float] = msgspec.field(default_factory=dict)


class Failed(_JobFrame, tag="failed", kw_only=True):
    detail: str
    code: str | None = None
    """The kind of failure, as in error bodies: ``disk_full`` (no room to write the result;
    retry later), ``op_failed``, ``invalid_image``..."""


class Cancelled(_JobFrame, tag="cancelled", kw_only=True):
    detail: str | None = None
    """Why: cancelled by its followers, superseded by a newer request of the task, or this
    follower withdrew while the job goes on for others."""


class WorkerStatus(msgspec.Struct, kw_only=True):
    """A ``playground-rt worker`` process (remote mode), from its heartbeat."""

    name: str
    host: str
    pid: int
    threads: int
    models: list[str]
    """Models whose files it has."""
    providers: list[str]
    """The execution providers its loaded sessions really got, best first."""
    running: int
    done: int
    failed: int
    started_ms: int


class ResultsHeld(msgspec.Struct, kw_only=True):
    """The results folder against its retention bounds (``results_max_bytes``/``_age_s``)."""

    files: int = 0
    bytes: int = 0
    max_bytes: int = 0
    max_age_s: float = 0.0
    evictions: dict[str, int] = msgspec.field(default_factory=dict)
    """Results removed since start-up, by reason: ``bytes`` (over ``max_bytes``), ``age``
    (unused for ``max_age_s``), ``disk_full`` (room made for a write on a full disk)."""


class Telemetry(_ServerFrame, tag="telemetry", kw_only=True):
    queue_depth: int
    running: int
    workers: int
    durations_ms: dict[str, float] = msgspec.field(default_factory=dict)
    clients: dict[str, MetricsReport] = msgspec.field(default_factory=dict)
    cluster: list[WorkerStatus] = msgspec.field(default_factory=list)
    """Remote mode: every live worker process (the figures above are the cluster's)."""
    results: ResultsHeld | None = None


class Error(_ServerFrame, tag="error", kw_only=True):
    """A client frame was refused; the socket stays open. ``code`` as in REST error bodies."""

    detail: str
    code: str | None = None
    ref: str | None = None


class Pong(_ServerFrame, tag="pong", kw_only=True):
    """The answer to ``ping`` (``ref`` echoed) and, without ``ref``, the server's heartbeat."""

    ref: str | None = None


class Gap(_ServerFrame, tag="gap", kw_only=True):
    """Sent on ``resume`` when the frames asked for are no longer in the replay buffer
    (or come from another epoch): the client should refetch job state over REST."""

    from_seq: int
    oldest_seq: int
    detail: str | None = None


JobFrame = Queued | Progress | Completed | Failed | Cancelled
ServerFrame = (
    Ack | Queued | Progress | Completed | Failed | Cancelled | Telemetry | Error | Pong | Gap
)
TERMINAL_FRAMES = (Completed, Failed, Cancelled)
