"""Pipelines: ordered lists of ops, their typed ``params``, routing and the cache key.

A pipeline's ``params`` object has two kinds of keys:

* op keys: in ``preprocessing`` each op is a key, ``true`` (its defaults), ``false``/absent
  (off) or an object of that op's params; in ``rembg`` the ``rembg`` op's params sit at the
  top level (``{"strength": 0.85}``).
* routing keys, which say *where* the work runs and never change the result (so they are
  not part of the cache key): ``rembg`` (in ``preprocessing``) and ``background_removal``,
  each ``"client"`` or ``"server"``.

The canonical form (README, "Cache keys") is what the browser reproduces with Web Crypto.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import msgspec
from PIL import Image

from . import errors
from .ops import OPS
from .ops.base import OpContext, OpSpec

Route = Literal["client", "server"]
ROUTING_KEYS = ("rembg", "background_removal")
CACHE_FORMAT = "playground-rt/cache-v1"

CANONICAL_FORM = (
    "sha256 over the UTF-8 text: "
    '"playground-rt/cache-v1\\n" + pipeline_id + "\\n" + pipeline version + "\\n" + '
    'canonical params + "\\n" + checkpoint sha256 (or "") + "\\n" + sha256 hex of the image bytes; '
    "cache_key = pipeline_id + ':' + the first 32 hex digits. Canonical params: the enabled ops "
    "with every default filled in (routing keys left out), as JSON with keys sorted, no spaces, "
    "non-ASCII kept, integral numbers as integers and other numbers as toFixed(6) with trailing "
    "zeros removed."
)


@dataclass(frozen=True)
class Step:
    op: OpSpec[Any]
    params: msgspec.Struct


@dataclass(frozen=True)
class Plan:
    """A validated request's work: the enabled ops in order, and where it should run."""

    pipeline: Pipeline
    steps: tuple[Step, ...]
    canonical: str
    route: Route

    @property
    def client_capable(self) -> bool:
        return all(step.op.client for step in self.steps)

    @property
    def uses_model(self) -> bool:
        return any(step.op.name == "rembg" for step in self.steps)


@dataclass(frozen=True)
class Pipeline:
    id: str
    version: str
    summary: str
    ops: tuple[str, ...]
    flat: bool
    """True when the single op's params sit at the top level of ``params``."""
    params_type: type[msgspec.Struct]

    def plan(self, params: dict[str, Any]) -> Plan:
        """Validate ``params`` (``InvalidParams`` names the ``$.params...`` path)."""
        try:
            decoded = msgspec.convert(_quantise(params), self.params_type, strict=True)
        except msgspec.ValidationError as exc:
            raise errors.InvalidParams(_params_path(str(exc))) from None
        steps = tuple(self._steps(decoded))
        route: Route = "client" if getattr(decoded, "rembg", None) == "client" else "server"
        if getattr(decoded, "background_removal", None) == "server":
            route = "server"
        elif getattr(decoded, "background_removal", None) == "client":
            route = "client"
        return Plan(self, steps, canonical_json(canonical_params(steps, self.flat)), route)

    def _steps(self, decoded: msgspec.Struct) -> list[Step]:
        if self.flat:
            op = OPS[self.ops[0]]
            fields = {f: getattr(decoded, f) for f in op.params.__struct_fields__}
            return [Step(op, op.params(**fields))]
        steps = []
        for name in self.ops:
            value = getattr(decoded, name)
            if value is False:
                continue
            op = OPS[name]
            steps.append(Step(op, op.params() if value is True else value))
        return steps

    def schema(self) -> dict[str, Any]:
        return msgspec.json.schema(self.params_type)


def _params_path(message: str) -> str:
    if " - at `$" not in message:
        return f"{message} - at `$.params`"
    return message.replace(" - at `$", " - at `$.params")


def _quantise(value: Any) -> Any:
    """Floats rounded to 6 decimals, as the canonical form writes them: the params that run
    are exactly the ones the cache key names (and the page's workers round alike)."""
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, dict):
        return {k: _quantise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_quantise(v) for v in value]
    return value


def apply(
    steps: tuple[Step, ...],
    image: Image.Image,
    ctx: OpContext,
    durations: dict[str, float] | None = None,
) -> Image.Image:
    """Run ``steps`` in order: the one loop the server's workers and ``playground-rt run`` share.

    Before each op: a cancellation check and a progress report (stage = the op's name);
    after it, its time in ms goes to ``durations["op.<name>"]`` when given.
    """
    for index, step in enumerate(steps):
        ctx.check_cancelled()
        ctx.report(step.op.name, index, len(steps))
        started = time.perf_counter()
        image = step.op.run(image, step.params, ctx)
        if durations is not None:
            durations[f"op.{step.op.name}"] = round((time.perf_counter() - started) * 1000, 3)
        ctx = replace(ctx, image_key=_key_after(ctx.image_key, step))
    return image


def _key_after(key: str | None, step: Step) -> str | None:
    """The ``image_key`` of an op's output: its input's key, the op and its params (ops are
    deterministic); none after a model's op (its output depends on the model file too)."""
    if key is None or step.op.name == "rembg":
        return None
    text = f"{key}\n{step.op.name}\n{msgspec.json.encode(step.params).decode()}"
    return hashlib.sha256(text.encode()).hexdigest()


def canonical_params(steps: tuple[Step, ...], flat: bool) -> dict[str, Any]:
    """The plan's params with every default filled in and routing keys left out."""
    if flat:
        return dict(msgspec.to_builtins(steps[0].params))
    return {step.op.name: msgspec.to_builtins(step.params) for step in steps}


def _number(value: int | float) -> str:
    if isinstance(value, int) or value.is_integer():
        return str(int(value))
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def canonical_json(value: Any) -> str:
    """The canonical text of ``value`` (see ``CANONICAL_FORM``); JS: ``static/js/cachekey.js``."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, int | float):
        return _number(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical_json(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{canonical_json(k)}:{canonical_json(v)}" for k, v in items) + "}"
    raise TypeError(f"not canonicalisable: {type(value).__name__}")


def job_id(pipeline_id: str, hex_digest: str) -> str:
    return f"{pipeline_id}-{hex_digest}"


def cache_key(pipeline_id: str, hex_digest: str) -> str:
    return f"{pipeline_id}:{hex_digest}"


def split_job_id(job_id: str) -> tuple[str, str]:
    """``(pipeline_id, hex digest)`` of a job id (the inverse of :func:`job_id`)."""
    pipeline_id, _, hex_digest = job_id.rpartition("-")
    return pipeline_id, hex_digest


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (a custom checkpoint's part of the cache key)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digest(plan: Plan, image_sha256: str, checkpoint_sha256: str = "") -> str:
    text = "\n".join(
        (
            CACHE_FORMAT,
            plan.pipeline.id,
            plan.pipeline.version,
            plan.canonical,
            checkpoint_sha256,
            image_sha256,
        )
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _params_struct(
    name: str, ops: tuple[str, ...], flat: bool, routing: tuple[str, ...]
) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    if flat:
        op = OPS[ops[0]]
        for field in msgspec.structs.fields(op.params):
            fields.append((field.name, field.type, field.default))
    else:
        fields = [(op, bool | OPS[op].params, False) for op in ops]
    fields += [(key, Route | None, None) for key in routing]
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True)


def _pipeline(pid: str, version: str, summary: str, ops: tuple[str, ...], flat: bool) -> Pipeline:
    params = _params_struct(f"{pid.title()}Params", ops, flat, ROUTING_KEYS)
    params.__doc__ = summary
    return Pipeline(pid, version, summary, ops, flat, params)


PREPROCESSING_OPS = (
    "crop",
    "resize",
    "rotate",
    "flip",
    "grayscale",
    "autocontrast",
    "equalize",
    "blur",
    "sharpen",
)

PIPELINES: dict[str, Pipeline] = {
    p.id: p
    for p in (
        _pipeline(
            "preprocessing",
            "1",
            "Classic preprocessing. Ops run in this order: " + ", ".join(PREPROCESSING_OPS) + ".",
            PREPROCESSING_OPS,
            flat=False,
        ),
        _pipeline(
            "rembg",
            "1",
            "Background removal with rembg (u2netp by default, or the request's custom .onnx).",
            ("rembg",),
            flat=True,
        ),
    )
}


def output_size(plan: Plan, size: tuple[int, int]) -> tuple[int, int]:
    """The result's ``(width, height)`` for an input of ``size`` (``max_pixels`` bounds
    results too, checked before a job is queued)."""
    for step in plan.steps:
        size = step.op.output_size(size, step.params)
    return size


def get_pipeline(pipeline_id: str) -> Pipeline:
    try:
        return PIPELINES[pipeline_id]
    except KeyError:
        known = ", ".join(sorted(PIPELINES))
        raise errors.UnknownPipeline(
            f"unknown pipeline_id {pipeline_id!r}; known: {known}"
        ) from None
