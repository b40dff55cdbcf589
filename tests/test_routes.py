"""The route table is declared once (``web.routes``): the app serves exactly its operations
and ``/openapi.json`` documents each of them."""

from __future__ import annotations

from pathlib import Path

from starlette.routing import Mount, Route, WebSocketRoute

from playground_rt.web.app import create_app
from playground_rt.web.routes import OPERATIONS

from .conftest import Server, make_settings

UNDOCUMENTED = {"/ws": "docs/protocol.md", "/results": "the result files", "": "the page"}
"""What is mounted beside the table, documented elsewhere."""


def test_every_route_the_app_serves_is_an_operation_of_the_table(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path))
    served = set()
    for route in app.routes:
        if isinstance(route, Route):
            served |= {(method, route.path) for method in route.methods or ()}
        else:
            assert isinstance(route, Mount | WebSocketRoute) and route.path in UNDOCUMENTED
    declared = {(op.method.upper(), op.path) for op in OPERATIONS}
    assert {(m, p) for m, p in served if m != "HEAD"} == declared


async def test_openapi_documents_every_operation(server: Server) -> None:
    spec = (await server.http.get("/openapi.json")).json()
    documented = {(method, path) for path, ops in spec["paths"].items() for method in ops}
    assert documented == {(op.method, op.path) for op in OPERATIONS}
    for op in OPERATIONS:
        assert spec["paths"][op.path][op.method]["summary"] == op.summary
