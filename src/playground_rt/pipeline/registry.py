"""Pipelines: ordered lists of ops, their typed ``params``, routing and the cache key.

A pipeline's ``params`` object has two kinds of keys:

* op keys: in ``preprocessing`` each op is a key, ``true`` (its defaults), ``false``/absent
  (off) or an object of that op's params; in ``rembg`` the ``rembg`` op's params sit at the
  top level (``{"strength": 0.85}``). The ``rembg`` key of ``preprocessing`` also takes
  ``"client"`` or ``"server"``: background removal on, with its defaults, placement given.
* routing keys, which say *where* the work runs and never change the result (so they are
  not part of the cache key): ``background_removal`` (both pipelines) and, in ``rembg``,
  ``rembg``; each ``"client"`` or ``"server"``.

Where a request runs (:attr:`Plan.route`): ``background_removal`` when given (the page's
switch: ``"server"`` is the contract's fallback), else the placement a ``rembg`` string
names, else the server. A client route still runs on the server when a step cannot run in
the page (:meth:`Plan.server_reasons`).

The canonical form (README, "Cache keys") is what the browser reproduces with Web Crypto.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import msgspec
from PIL import Image

from playground_rt import errors
from playground_rt.pipeline.ops import OPS
from playground_rt.pipeline.ops.base import OpContext, OpSpec

Route = Literal["client", "server"]
ROUTING_KEYS = ("rembg", "background_removal")
"""Every key that only says where work runs (``rembg`` is one in the flat pipeline only)."""
PLACED_OPS = frozenset({"rembg"})
"""Op keys of ``preprocessing`` that also take ``"client"``/``"server"`` (on, placement given)."""
CACHE_FORMAT = "playground-rt/cache-v2"

CANONICAL_FORM = (
    "sha256 over the UTF-8 text: "
    '"playground-rt/cache-v2\\n" + pipeline_id + "\\n" + pipeline version + "\\n" + '
    'canonical params + "\\n" + checkpoint sha256 (or "") + "\\n" + sha256 hex of the image bytes; '
    "cache_key = pipeline_id + ':' + the first 32 hex digits. Canonical params: the enabled ops "
    "with every default filled in (routing keys left out; a placed op such as "
    '"rembg": "client" counts as its defaults), as JSON with keys sorted, no spaces, '
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
        return not self.server_reasons()

    @property
    def uses_model(self) -> bool:
        return any(step.op.name == "rembg" for step in self.steps)

    @property
    def uses_checkpoint(self) -> bool:
        """The request's ``checkpoint_path`` replaces the model (the ``rembg`` pipeline only:
        in ``preprocessing`` the seed's ``checkpoint_path`` is a training checkpoint)."""
        return self.pipeline.takes_checkpoint and self.uses_model

    def server_reasons(self, checkpoint: bool = False) -> list[str]:
        """Why this plan cannot run in the page's workers (empty when it can)."""
        reasons = []
        for step in self.steps:
            if not step.op.client:
                reasons.append(f"op {step.op.name!r} has no client worker")
            elif step.op.client_check is not None and (why := step.op.client_check(step.params)):
                reasons.append(why)
        if checkpoint and self.uses_checkpoint:
            reasons.append("a custom checkpoint runs on the server only")
        return reasons


@dataclass(frozen=True)
class Pipeline:
    id: str
    version: str
    summary: str
    ops: tuple[str, ...]
    flat: bool
    """True when the single op's params sit at the top level of ``params``."""
    params_type: type[msgspec.Struct]
    routing: tuple[str, ...]
    """This pipeline's routing keys (never hashed)."""
    takes_checkpoint: bool
    table: Mapping[str, OpSpec[Any]] = field(default_factory=lambda: MappingProxyType(OPS))
    """Where its ops are found by name (``ops.OPS``, or a test's own)."""

    def plan(self, params: dict[str, Any]) -> Plan:
        """Validate ``params`` (``InvalidParams`` names the ``$.params...`` path)."""
        try:
            decoded = msgspec.convert(_quantise(params), self.params_type, strict=True)
        except msgspec.ValidationError as exc:
            raise errors.InvalidParams(_params_path(str(exc))) from None
        steps = tuple(self._steps(decoded))
        return Plan(
            self, steps, canonical_json(canonical_params(steps, self.flat)), _route(decoded)
        )

    def _steps(self, decoded: msgspec.Struct) -> list[Step]:
        if self.flat:
            op = self.table[self.ops[0]]
            fields = {f: getattr(decoded, f) for f in op.params.__struct_fields__}
            return [Step(op, op.params(**fields))]
        steps = []
        for name in self.ops:
            value = getattr(decoded, name)
            if value is False:
                continue
            op = self.table[name]
            # true, or a placement ("client"/"server"): the op with its defaults
            steps.append(Step(op, value if isinstance(value, op.params) else op.params()))
        return steps

    def schema(self) -> dict[str, Any]:
        return msgspec.json.schema(self.params_type)


def _route(decoded: msgspec.Struct) -> Route:
    switch: Route | None = getattr(decoded, "background_removal", None)
    if switch is not None:
        return switch
    placement = getattr(decoded, "rembg", None)
    return placement if placement in ("client", "server") else "server"


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


class FileDigests:
    """:func:`file_sha256` computed once per (path, mtime, size): a checkpoint is hashed
    again only when it changes. Thread-safe enough (a race hashes twice); bounded by
    ``MAX_FILE_DIGESTS`` entries, the oldest forgotten first."""

    def __init__(self) -> None:
        self._known: dict[tuple[Path, int, int], str] = {}

    def __call__(self, path: Path) -> str:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        found = self._known.get(key)
        if found is None:
            found = self._known[key] = file_sha256(path)
            while len(self._known) > MAX_FILE_DIGESTS:
                del self._known[next(iter(self._known))]
        return found


MAX_FILE_DIGESTS = 256
"""Checkpoint versions whose digests :class:`FileDigests` keeps."""


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
    name: str,
    ops: tuple[str, ...],
    flat: bool,
    routing: tuple[str, ...],
    table: Mapping[str, OpSpec[Any]],
) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    if flat:
        for struct_field in msgspec.structs.fields(table[ops[0]].params):
            fields.append((struct_field.name, struct_field.type, struct_field.default))
    else:
        for name in ops:
            params = table[name].params
            fields.append(
                (name, bool | Route | params if name in PLACED_OPS else bool | params, False)
            )
    fields += [(key, Route | None, None) for key in routing]
    return msgspec.defstruct(name, fields, kw_only=True, forbid_unknown_fields=True)


def make_pipeline(
    pid: str,
    version: str,
    summary: str,
    ops: tuple[str, ...],
    flat: bool,
    table: Mapping[str, OpSpec[Any]] = OPS,
) -> Pipeline:
    """A pipeline of ``ops`` (names in ``table``); ``flat``: one op, its params at the top."""
    routing = tuple(key for key in ROUTING_KEYS if flat or key not in ops)
    params = _params_struct(f"{pid.title()}Params", ops, flat, routing, table)
    params.__doc__ = summary
    return Pipeline(
        pid, version, summary, ops, flat, params, routing, flat, MappingProxyType(dict(table))
    )


PREPROCESSING_OPS = (
    "crop",
    "resize",
    "rotate",
    "flip",
    # Background removal after the geometry (the model sees the framing the user chose, and
    # costs less on a cropped or shrunk image) and before tone and filters: u2netp was trained
    # on natural colours, so it must see the real ones, not a grayscale, stretched or blurred
    # copy; the tone ops then work on the colour bands and keep the cut-out's alpha.
    "rembg",
    "grayscale",
    "autocontrast",
    "equalize",
    "blur",
    "sharpen",
)
PREPROCESSING_SUMMARY = (
    "Classic preprocessing. Ops run in this order: "
    + ", ".join(PREPROCESSING_OPS)
    + ". Background removal (rembg) runs after the geometry ops and before tone and filters, "
    'so the model sees the picture\'s real colours. Its key takes true or "client"/"server" '
    "(rembg's defaults; the string also says where it should run), or an object of the rembg "
    "pipeline's params."
)

Pipelines = Mapping[str, Pipeline]
"""A pipeline table: ``PIPELINES``, or what ``create_app(settings, pipelines=...)`` was given."""

PIPELINES: Pipelines = {
    p.id: p
    for p in (
        make_pipeline("preprocessing", "1", PREPROCESSING_SUMMARY, PREPROCESSING_OPS, flat=False),
        make_pipeline(
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


def get_pipeline(pipeline_id: str, pipelines: Pipelines = PIPELINES) -> Pipeline:
    try:
        return pipelines[pipeline_id]
    except KeyError:
        known = ", ".join(sorted(pipelines))
        raise errors.UnknownPipeline(
            f"unknown pipeline_id {pipeline_id!r}; known: {known}"
        ) from None


def params_from_json(text: str, where: str) -> dict[str, Any]:
    """``params`` given as JSON text (the CLI's ``--params``, a built command's value): a
    JSON object, or ``InvalidParams`` naming ``where``."""
    try:
        params = json.loads(text)
    except ValueError as exc:
        raise errors.InvalidParams(f"{where} is not JSON ({exc})") from None
    if not isinstance(params, dict):
        raise errors.InvalidParams(f"{where} must be a JSON object")
    return params
