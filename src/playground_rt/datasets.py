"""Browsing the images under the data root, for the page's picker."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path, PurePosixPath

from . import schemas

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
RESCAN_S = 5.0

log = logging.getLogger("playground_rt.datasets")


class Datasets:
    """A sorted listing of image files under ``root``, rescanned at most every few seconds
    so paging through it stays cheap.

    Skipped: symlinks out of the root, files that vanish or cannot be read during the scan,
    and names that are not valid UTF-8 (they cannot be put in JSON, nor asked for by
    ``image_path``); each such name is logged once, at warning level.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: list[schemas.DatasetEntry] = []
        self._scanned = -RESCAN_S
        self._warned: set[str] = set()

    def _scan(self) -> list[schemas.DatasetEntry]:
        base = self.root.resolve()
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.suffix.lower() not in SUFFIXES:
                continue
            relative = str(PurePosixPath(self.root.name, *path.relative_to(base).parts))
            if not _is_utf8(relative):
                self._warn_once(relative)
                continue
            try:
                if not path.is_file() or not (real := path.resolve()).is_relative_to(base):
                    continue
                size = real.stat().st_size
            except (OSError, RuntimeError):  # vanished, unreadable, a symlink loop (3.11)
                continue
            found.append(schemas.DatasetEntry(relative, size))
        return sorted(found, key=lambda e: e.path)

    def _warn_once(self, relative: str) -> None:
        if relative not in self._warned:
            self._warned.add(relative)
            shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            log.warning("%r is not valid UTF-8: left out of /api/datasets", shown)

    async def page(self, offset: int, limit: int) -> schemas.DatasetPage:
        if time.monotonic() - self._scanned > RESCAN_S:
            self._entries = await asyncio.to_thread(self._scan)
            self._scanned = time.monotonic()
        items = self._entries[offset : offset + limit]
        return schemas.DatasetPage(
            items=items, total=len(self._entries), offset=offset, limit=limit
        )


def _is_utf8(name: str) -> bool:
    """Whether a file name decoded by Python (undecodable bytes become surrogates) was
    valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
