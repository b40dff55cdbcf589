"""Browsing the images under the data root, for the page's picker."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path

from playground_rt import schemas

SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"})
RESCAN_S = 5.0
RESCAN_FACTOR = 20

log = logging.getLogger("playground_rt.web.datasets")


class Datasets:
    """A sorted listing of image files under ``root``, rescanned at most every few seconds
    so paging through it stays cheap. A scan runs once however many requests wait for it,
    in the background once there is a listing to answer with, and the interval grows with
    the scan's cost (``RESCAN_FACTOR`` times its duration), so a data root of 100k files is
    walked now and then, never while a page waits. Searching filters
    the cached listing (case-insensitive substring of the path); the last query's matches
    are kept, so paging through them costs a slice.

    Skipped: symlinks out of the root, files that vanish or cannot be read during the scan,
    and names that are not valid UTF-8 (they cannot be put in JSON, nor asked for by
    ``image_path``); each such name is logged once, at warning level.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._entries: list[schemas.DatasetEntry] = []
        self._scanned = -RESCAN_S
        self._interval = RESCAN_S
        self._scanning: asyncio.Task[list[schemas.DatasetEntry]] | None = None
        self._found: tuple[str, list[schemas.DatasetEntry]] = ("", self._entries)
        self._warned: set[str] = set()
        self._dirty = True  # nothing scanned yet: the first request waits for the scan

    def _scan(self) -> list[schemas.DatasetEntry]:
        base = self.root.resolve()
        if not base.is_dir():
            return []
        found: list[schemas.DatasetEntry] = []
        pending: list[tuple[Path, tuple[str, ...]]] = [(base, (self.root.name,))]
        while pending:  # os.scandir, not Path.rglob: one stat per image, ~30x faster
            folder, parts = pending.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    pending.append((Path(entry.path), (*parts, entry.name)))
                elif os.path.splitext(entry.name)[1].lower() in SUFFIXES:
                    if (item := self._entry(entry, parts, base)) is not None:
                        found.append(item)
        return sorted(found, key=lambda e: e.path)

    def _entry(
        self, entry: os.DirEntry[str], parts: tuple[str, ...], base: Path
    ) -> schemas.DatasetEntry | None:
        relative = "/".join((*parts, entry.name))
        if not _is_utf8(relative):
            self._warn_once(relative)
            return None
        try:
            if entry.is_symlink():  # only a link can lead out of the root
                real = Path(entry.path).resolve()
                if not real.is_relative_to(base) or not real.is_file():
                    return None
                size = real.stat().st_size
            elif entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
            else:
                return None
        except (OSError, RuntimeError):  # vanished, unreadable, a symlink loop (3.11)
            return None
        return schemas.DatasetEntry(relative, size)

    def _warn_once(self, relative: str) -> None:
        if relative not in self._warned:
            self._warned.add(relative)
            shown = relative.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            log.warning("%r is not valid UTF-8: left out of /api/datasets", shown)

    async def page(self, offset: int, limit: int, q: str = "") -> schemas.DatasetPage:
        entries = self._matching(await self.entries(), q.strip())
        return schemas.DatasetPage(
            items=entries[offset : offset + limit],
            total=len(entries),
            offset=offset,
            limit=limit,
            q=q,
        )

    async def entries(self) -> list[schemas.DatasetEntry]:
        """The listing. Older than the interval, it is rescanned in the background and the
        old one answers meanwhile (a 100k-file walk never holds a page); only the first
        request, and the first after :meth:`invalidate`, wait for the scan."""
        if time.monotonic() - self._scanned > self._interval:
            if self._scanning is None:
                self._scanning = asyncio.create_task(self._rescan())
                self._scanning.add_done_callback(_retrieve)
            if self._dirty:
                await asyncio.shield(self._scanning)
        return self._entries

    def invalidate(self) -> None:
        """The next request waits for a rescan (a file was added through the API)."""
        self._scanned = -self._interval
        self._dirty = True

    async def _rescan(self) -> list[schemas.DatasetEntry]:
        started = time.monotonic()
        try:
            entries = await asyncio.to_thread(self._scan)
        finally:
            self._scanning = None
        self._entries = entries
        self._found = ("", entries)
        self._dirty = False
        self._scanned = time.monotonic()
        self._interval = max(RESCAN_S, RESCAN_FACTOR * (self._scanned - started))
        return entries

    def _matching(self, entries: list[schemas.DatasetEntry], q: str) -> list[schemas.DatasetEntry]:
        if not q:
            return entries
        query, found = self._found
        if query != q.casefold():
            needle = q.casefold()
            found = [e for e in entries if needle in e.path.casefold()]
            self._found = (needle, found)
        return found


def _retrieve(task: asyncio.Task[list[schemas.DatasetEntry]]) -> None:
    """A background rescan nobody awaited: its failure is logged, not left unretrieved."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("scanning the data root failed", exc_info=exc)


def _is_utf8(name: str) -> bool:
    """Whether a file name decoded by Python (undecodable bytes become surrogates) was
    valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
