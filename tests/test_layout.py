"""The package reads as the flow, and its imports go one way (issue 14).

``cli`` → ``web`` → ``hub`` → ``jobs`` | ``commands`` → ``pipeline`` → the shared modules at
the top (``config``, ``errors``, ``schemas``, ``paths``). Every import counts, those under
``TYPE_CHECKING`` too: a type-only back-reference is still a cycle for a reader.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "playground_rt"
LAYERS = {
    "": 0,
    "schemas": 0,
    "pipeline": 1,
    "commands": 2,
    "jobs": 2,
    "hub": 3,
    "web": 4,
    "cli": 5,
}
"""Each folder's layer: a module imports only from its own folder or from lower layers."""
SYNC_ONLY = {"asyncio", "starlette", "uvicorn", "websockets", "redis"}
"""What ``pipeline/`` never imports: it is the synchronous core the CLI runs without a loop."""


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        parts = parts[:-1] if parts[-1] in ("__init__", "__main__") else parts
        if path.name != "__main__.py":
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> tuple[set[str], set[str]]:
    """(the package modules ``name`` imports, the outside top-level packages it imports)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    inside: set[str] = set()
    outside: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(["playground_rt", *base, *filter(None, [node.module])])
            else:
                module = node.module or ""
            # `from package import module` is an edge to the module, not to the package
            targets = [f"{module}.{alias.name}" for alias in node.names]
            targets = [t if t.removeprefix("playground_rt.") in known else module for t in targets]
        else:
            continue
        for target in targets:
            if target == "playground_rt" or target.startswith("playground_rt."):
                inside.add(target.removeprefix("playground_rt").removeprefix("."))
            else:
                outside.add(target.split(".")[0])
    inside.discard(name)
    return inside, outside


GRAPH = {name: imports(name, path, set(modules())) for name, path in modules().items()}


def folder(name: str) -> str:
    return name.split(".")[0] if "." in name or name in LAYERS else ""


def test_the_listing_reads_as_the_flow() -> None:
    folders = {folder(name) for name in GRAPH}
    assert folders == set(LAYERS), folders


@pytest.mark.parametrize("name", sorted(GRAPH))
def test_imports_go_down_the_layers(name: str) -> None:
    upward = [
        target
        for target in GRAPH[name][0]
        if folder(target) != folder(name) and LAYERS[folder(target)] >= LAYERS[folder(name)]
    ]
    assert not upward, f"{name} imports {upward}: same or higher layer"


def test_the_import_graph_has_no_cycle() -> None:
    edges = {name: GRAPH[name][0] & GRAPH.keys() for name in GRAPH}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("cycle: " + " → ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for target in sorted(edges[name]):
            visit(target, [*trail, name])
        done.add(name)

    for name in sorted(edges):
        visit(name, [])


def test_the_pipeline_runs_without_an_event_loop_or_http() -> None:
    used = {name: GRAPH[name][1] & SYNC_ONLY for name in GRAPH if folder(name) == "pipeline"}
    assert not {name: found for name, found in used.items() if found}


JOB_HANDLING = {
    "jobs.manager",
    "jobs.cluster.remote",
    "jobs.cluster.worker",
    "jobs.cluster.updates",
    "jobs.cluster.upkeep",
    "jobs.work",
}
"""Who runs and withdraws jobs: the edge (``web``) drives them, the hub only fans frames out."""


def test_the_hub_fans_out_frames_and_handles_no_job() -> None:
    used = {name: GRAPH[name][0] & JOB_HANDLING for name in GRAPH if folder(name) == "hub"}
    assert not {name: found for name, found in used.items() if found}
