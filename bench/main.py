"""``just bench`` / ``playground-rt bench``: run the pipeline and hub benchmarks.

``which`` is ``pipeline`` (``bench.pipeline``), ``hub`` (``bench.hub_fanout``), ``browser``
(``bench.browser``: the page's own u2netp against the server's), ``cluster`` (``bench.cluster``:
worker processes behind a remote web node), ``sweep`` (``bench.sweep``: sizes 0.3-12 MP, memory
per job, ~15 minutes), ``retention`` (``bench.retention``: the results store at its cap, a
soak), ``budgets`` (``bench.budgets``: speed and memory budgets, once test assertions),
``compose`` (``bench.compose``: the cut-out and strength blend, one pass and threads) or
``all`` (pipeline, hub, browser); ``--quick`` makes every benchmark a short smoke run.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

MODULES = {
    "pipeline": "bench.pipeline",
    "hub": "bench.hub_fanout",
    "browser": "bench.browser",
    "sweep": "bench.sweep",
    "cluster": "bench.cluster",
    "retention": "bench.retention",
    "budgets": "bench.budgets",
    "compose": "bench.compose",
}
ALL = ("pipeline", "hub", "browser")
"""What ``all`` runs; the others take many minutes and run when named."""


def main(argv: Sequence[str] | None = None) -> int:
    cli = argparse.ArgumentParser(prog="bench", description=__doc__)
    cli.add_argument("which", choices=[*MODULES, "all"], nargs="?", default="all")
    cli.add_argument("--quick", action="store_true", help="fewer iterations, for a smoke run")
    args = cli.parse_args(argv)
    names = list(ALL) if args.which == "all" else [args.which]
    status = 0
    for name in names:
        module = MODULES[name]
        status = max(status, _run(module, ["--quick"] if args.quick else []))
    return status


def _run(module_name: str, argv: list[str]) -> int:
    """Import a benchmark lazily (its heavy imports only when it runs) and call its main."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(f"note: {module_name} is not there yet; skipped")
        return 0
    entry = getattr(module, "main", None)
    if entry is None:
        print(f"note: {module_name} has no main(argv) yet; skipped")
        return 0
    status: int = entry(argv)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
