"""schemathesis against the server's own ``/openapi.json`` (generated from ``schemas``).

Every operation gets ``PLAYGROUND_FUZZ_EXAMPLES`` generated requests per mode (default 25;
``just fuzz`` runs 500), schema-valid ones and schema-violating ones, sent to
``playground-rt serve`` in a subprocess. Two checks: no 5xx (``not_a_server_error``), and
every answer, error bodies included, matches the schema its status documents
(``response_schema_conformance``). Afterwards the server's log must hold no traceback.

The operations are driven with ``as_strategy`` + ``@given`` rather than schemathesis'
pytest plugin, whose lazy-schema loader does not run under pytest 9 (``_nodeid``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import response_schema_conformance

from playground_rt.web import openapi

from .procserver import ProcServer, serve_process

EXAMPLES = int(os.environ.get("PLAYGROUND_FUZZ_EXAMPLES", "25"))
DOCUMENT = openapi.document(version("playground-rt"))
CASES = [
    pytest.param(f"{method.upper()} {path}", mode, id=f"{method.upper()} {path} {mode.value}")
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in GenerationMode
    # an operation without a body, a query string or a constrained path parameter (a job id's
    # pattern) has no invalid request to generate
    if mode is GenerationMode.POSITIVE
    or "requestBody" in operation
    or any(p["in"] == "query" or "pattern" in p["schema"] for p in operation.get("parameters", ()))
]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcServer]:
    root: Path = tmp_path_factory.mktemp("fuzz")
    with serve_process(root, preload_models=[], workers=1, fallback_wait_s=5) as server:
        yield server
        assert "Traceback" not in server.output(), server.output()[-4000:]


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ProcServer) -> BaseSchema:
    served = httpx.get(fuzz_server.url + "/openapi.json", trust_env=False).json()
    assert served == DOCUMENT  # what we fuzz is what the server publishes
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


@pytest.mark.parametrize(("label", "mode"), CASES)
def test_no_5xx_and_answers_match_the_schema(
    api_schema: BaseSchema, fuzz_server: ProcServer, label: str, mode: GenerationMode
) -> None:
    operation = api_schema.find_operation_by_label(label)
    assert operation is not None, label

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=EXAMPLES <= 25,  # CI: the same requests every run
        database=None,
    )
    def fuzz(case: Case[Any]) -> None:  # generic over schemathesis' operation type
        case.call_and_validate(
            base_url=fuzz_server.url,
            checks=[not_a_server_error, response_schema_conformance],
            timeout=30,
        )

    fuzz()
