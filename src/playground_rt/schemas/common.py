"""The ids and shapes that every part of the wire format shares, and the error body."""

from __future__ import annotations

from typing import Annotated, Literal

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


NonNegInt = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]

ModelName = Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_\-]{1,64}$")]
