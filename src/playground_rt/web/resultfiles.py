"""``GET /results/{pipeline_id}/{job_id}.png``: the result files, as ``StaticFiles`` serves
them (ranges, ``ETag``, ``304``), pinned while they are sent and counted as a use.

A file that is not there (never computed here, or removed by retention) is a JSON 404 that
says how to get it back: ask for the preview again and it is recomputed.
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from playground_rt import errors
from playground_rt.jobs.retention import Retention


class ResultFiles(StaticFiles):
    def __init__(self, root: Path, retention: Retention) -> None:
        super().__init__(directory=root, check_dir=False)
        self.root = root
        self.retention = retention

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        relative = self.get_path(scope)
        path = self.root / relative
        with self.retention.pinned(path):
            try:
                await super().__call__(scope, receive, send)
            except HTTPException as exc:
                if exc.status_code != 404:
                    raise
                raise errors.NotFound(
                    f"no result {relative[:200]!r}: never computed, or removed by retention "
                    "(results_max_bytes, results_max_age_s); ask for the preview again to "
                    "recompute it"
                ) from None
        self.retention.used(path)
