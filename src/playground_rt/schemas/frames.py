"""The WebSocket frames (``docs/protocol.md``): JSON text, a tagged union on ``type``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from playground_rt.schemas.common import (
    Cursor,
    JobId,
    TaskId,
)
from playground_rt.schemas.http import (
    MetricsReport,
    PipelineRequest,
)

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
