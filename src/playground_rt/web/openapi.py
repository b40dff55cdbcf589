"""``/openapi.json``, generated from the route table (``routes``) and the Structs in ``schemas``
(never written by hand)."""

from __future__ import annotations

from typing import Any

import msgspec

from playground_rt import schemas
from playground_rt.pipeline.registry import PIPELINES, Pipelines
from playground_rt.web.routes import BODY_ERRORS, OPERATIONS, PATTERNS, Operation

PLAIN: dict[type[Any], dict[str, Any]] = {
    bytes: {"type": "string", "format": "binary"},
    str: {"type": "string"},
    dict: {"type": "object"},
}
"""Responses that are no Struct: a file, text, a JSON object of its own kind."""


def _content(ref: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": ref}}


def _operation(op: Operation, refs: dict[type[Any], dict[str, Any]]) -> dict[str, Any]:
    ok_schema = PLAIN.get(op.response) or refs[op.response]
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


def document(version: str, pipelines: Pipelines = PIPELINES) -> dict[str, Any]:
    types: list[type[Any]] = [schemas.ErrorBody, *(p.params_type for p in pipelines.values())]
    types += [t for op in OPERATIONS for t in (op.body, op.response) if t and t not in PLAIN]
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


def render(version: str, pipelines: Pipelines = PIPELINES) -> bytes:
    return msgspec.json.encode(document(version, pipelines))
