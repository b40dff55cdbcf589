"""Content-addressed results on disk: ``{results_root}/{pipeline_id}/{job_id}.png``.

The job id is derived from the cache key, so the path alone tells whether a result exists,
also after a restart. Files are written to a temp file in the same folder and
``os.replace``d into place, so no reader ever sees half a PNG; a file that is not a whole
PNG (wrong signature, no IEND trailer) counts as missing and is recomputed.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TRAILER = b"IEND\xaeB`\x82"
TEMP_PREFIX = ".tmp-"


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, pipeline_id: str, job_id: str) -> Path:
        assert "/" not in pipeline_id and "/" not in job_id and ".." not in job_id
        return self.root / pipeline_id / f"{job_id}.png"

    def lookup(self, pipeline_id: str, job_id: str) -> Path | None:
        """The result's path if a whole PNG is there; a damaged one is removed."""
        path = self.path(pipeline_id, job_id)
        try:
            with path.open("rb") as handle:
                head = handle.read(8)
                handle.seek(-8, os.SEEK_END)
                tail = handle.read(8)
        except (FileNotFoundError, OSError):
            return None
        if head == PNG_SIGNATURE and tail == PNG_TRAILER:
            return path
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def write(self, pipeline_id: str, job_id: str, data: bytes) -> Path:
        """Atomically place ``data`` (world-readable, as results are served) and return the path."""
        path = self.path(pipeline_id, job_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".png", dir=path.parent)
        try:
            # No fsync: a file torn by a power cut fails lookup()'s whole-PNG check and is
            # recomputed, so durability would cost every job milliseconds for nothing.
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(temp, 0o644)  # mkstemp makes 0600 files
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        return path

    def sweep(self) -> int:
        """Remove temp files left by a crash; returns how many. Run at start-up only."""
        removed = 0
        if not self.root.is_dir():
            return 0
        for temp in self.root.glob(f"*/{TEMP_PREFIX}*"):
            with contextlib.suppress(OSError):
                temp.unlink()
                removed += 1
        return removed
