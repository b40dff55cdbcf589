"""The op registry: every op by name, and decoding of one op's params.

Ops take RGB, RGBA, L or LA images (the caller converts anything else) and are
deterministic. Those with ``client=True`` have bit-compatible ports in
``static/js/ops.js``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from playground_rt import errors
from playground_rt.pipeline.ops import background, filters, geometry, tone
from playground_rt.pipeline.ops.base import OpContext, OpSpec, SessionProvider

__all__ = ["OPS", "OpContext", "OpSpec", "SessionProvider", "get_op", "parse_params"]

OPS: dict[str, OpSpec[Any]] = {
    spec.name: spec for spec in (*tone.SPECS, *filters.SPECS, *geometry.SPECS, *background.SPECS)
}


def get_op(name: str) -> OpSpec[Any]:
    """The op called ``name``; ``errors.InvalidParams`` names the known ones otherwise."""
    try:
        return OPS[name]
    except KeyError:
        known = ", ".join(sorted(OPS))
        raise errors.InvalidParams(f"unknown op {name!r}; known: {known}") from None


def parse_params(spec: OpSpec[Any], raw: object, at: str | None = None) -> Any:
    """``raw`` (decoded JSON) as ``spec.params``, or ``errors.InvalidParams``.

    ``at`` is where ``raw`` sits in the request (default ``$.<op name>``); the error's
    message carries the full path, e.g. ``Expected `int` <= 31 - at `$.blur.kernelSize```
    or, for the checks a Struct's ``__post_init__`` makes (whose messages start with the
    field's name), ``$.blur.kernelSize must be odd, got 4``.
    """
    at = f"$.{spec.name}" if at is None else at
    try:
        return msgspec.convert(raw, spec.params)
    except msgspec.ValidationError as exc:
        raise errors.InvalidParams(_located(str(exc), at, spec.params)) from None


def _located(message: str, at: str, params: type[msgspec.Struct]) -> str:
    text, marker, path = message.rpartition(" - at `$")
    if marker:
        return f"{text} - at `{at}{path}"
    # msgspec gives no path for errors raised at the root Struct's __post_init__.
    first_word = message.split(" ", 1)[0]
    if first_word in params.__struct_fields__:
        return f"{at}.{message}"
    return f"{message} - at `{at}`"
