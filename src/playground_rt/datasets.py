"""Browsing the images under the data root, for the page's picker."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path, PurePosixPath

from . import schemas

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
RESCAN_S = 5.0


class Datasets:
    """A sorted listing of image files under ``root`` (symlinks out of it are skipped),
    rescanned at most every few seconds so paging through it stays cheap."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: list[schemas.DatasetEntry] = []
        self._scanned = -RESCAN_S

    def _scan(self) -> list[schemas.DatasetEntry]:
        base = self.root.resolve()
        if not base.is_dir():
            return []
        found = []
        for path in base.rglob("*"):
            if path.suffix.lower() not in SUFFIXES or not path.is_file():
                continue
            real = path.resolve()
            if not real.is_relative_to(base):
                continue
            relative = PurePosixPath(self.root.name, *path.relative_to(base).parts)
            found.append(schemas.DatasetEntry(str(relative), real.stat().st_size))
        return sorted(found, key=lambda e: e.path)

    async def page(self, offset: int, limit: int) -> schemas.DatasetPage:
        if time.monotonic() - self._scanned > RESCAN_S:
            self._entries = await asyncio.to_thread(self._scan)
            self._scanned = time.monotonic()
        items = self._entries[offset : offset + limit]
        return schemas.DatasetPage(
            items=items, total=len(self._entries), offset=offset, limit=limit
        )
