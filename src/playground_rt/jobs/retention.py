"""Retention: the results folder bounded by bytes and by age, least recently *used* first.

Every result is ``{results_root}/{pipeline_id}/{job_id}.png`` (``cache``). An index of them,
``{path: (size, last use)}`` in least-recently-used order, lives in memory: built from the
folder at start-up (:meth:`Retention.load`, modification times standing for last uses), then
kept by the server: a write adds a result, a cache hit (a preview answered ``completed``) and a
GET of the file count as uses. atime is never read (``noatime``/``relatime`` mounts lie).

The bounds: past ``max_bytes`` the least recently used results go, never the most recently
used one, so the folder holds at most the cap plus one result (plus any pinned at that
moment); a result unused for ``max_age_s`` goes whatever the total. A removed result is
missing like one never computed: asked for again, it is recomputed (same bytes, same path).

Pins: a result is pinned from before its write until its job's terminal frame has gone out
(``jobs``), and while a GET serves it (``resultfiles``); nothing pinned is removed. So a
follower is never told about a file that is already gone; one asking for it much later may
find it evicted, and a new preview recomputes it.

Other writers under the same root (``playground-rt run``, another server process sharing the
outputs folder) keep no index of this process's; :meth:`Retention.rescan`, every ``RESCAN_S``
(sooner for a short ``max_age_s``), reconciles with the folder: files the index lacks join it
(their mtime as last use), entries whose file another process removed leave it, and this
process's uses are written back as mtimes, so a restart keeps the order of use.

Threads: every method may be called from any thread (one lock). Files are removed by the
thread that trims: the worker thread that just wrote a result, or a thread of :meth:`keep`,
never the event loop; what the loop calls (``used``, ``pin``, ``unpin``, ``nudge``) does no I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from playground_rt import errors, schemas
from playground_rt.pipeline.results import TEMP_PREFIX, ResultStore, is_job_id, size_of

log = logging.getLogger("playground_rt.jobs.retention")

GiB = 1024**3
DEFAULT_MAX_BYTES = 2 * GiB
RESCAN_S = 60.0
MIN_RESCAN_S = 0.5
ROOM_MARGIN = 64 * 1024
"""Room asked beyond a result's size when making room on a full disk (block rounding)."""
TOUCH_SLACK_S = 1.0
"""A use this much later than a file's mtime is written back at the next rescan."""

Reason = Literal["bytes", "age", "disk_full"]
Scan = dict[Path, tuple[int, float]]


@dataclass
class Entry:
    size: int
    last_used: float
    """``time.time()`` of the last write or use."""


def default_max_bytes(free: int, held: int) -> int:
    """2 GiB, or half of what results may use (the free space plus what they hold) if less."""
    return max(1, min(DEFAULT_MAX_BYTES, (free + held) // 2))


class Retention:
    """The index of one results folder and its bounds (see the module docstring).

    ``max_bytes`` 0 is picked by :meth:`load` (:func:`default_max_bytes`); ``max_age_s`` 0
    means no age limit.
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._index: OrderedDict[Path, Entry] = OrderedDict()  # least recently used first
        self._pins: Counter[Path] = Counter()
        self._total = 0
        self._evictions: Counter[str] = Counter()
        self._wake = asyncio.Event()

    # --- start-up and rescans (threads) ----------------------------------------------------

    def load(self) -> None:
        """Index the folder as earlier runs and other writers left it, pick ``max_bytes`` if
        it is 0, and trim: a restart keeps the bounds."""
        self.root.mkdir(parents=True, exist_ok=True)
        found = sorted(scan(self.root).items(), key=lambda item: item[1][1])
        with self._lock:
            self._index = OrderedDict((path, Entry(*facts)) for path, facts in found)
            self._total = sum(entry.size for entry in self._index.values())
        if self.max_bytes == 0:
            self.max_bytes = default_max_bytes(shutil.disk_usage(self.root).free, self._total)
        removed = self.trim()
        held = self.figures()
        log.info(
            "results: %d files, %d bytes (max %d bytes, %g s); %d removed at start-up",
            *(held.files, held.bytes, held.max_bytes, held.max_age_s, removed),
        )

    def rescan(self) -> None:
        """Reconcile the index with the folder (other writers), write uses back as mtimes,
        then trim."""
        started = self._clock()
        found = scan(self.root)
        with self._lock:
            self._forget_gone(found, started)
            touch = self._merge(found)
        for path, when in touch:
            with contextlib.suppress(OSError):  # gone meanwhile: nothing to keep
                os.utime(path, (when, when))
        self.trim()

    def _forget_gone(self, found: Scan, started: float) -> None:
        """Drop entries whose file someone else removed (not those added since the scan)."""
        for path, entry in list(self._index.items()):
            if path not in found and path not in self._pins and entry.last_used < started:
                del self._index[path]
                self._total -= entry.size

    def _merge(self, found: Scan) -> list[tuple[Path, float]]:
        """Take in files the index lacks and uses made elsewhere; the uses to write back."""
        touch: list[tuple[Path, float]] = []
        reorder = False
        for path, (size, mtime) in found.items():
            entry = self._index.get(path)
            if entry is None:
                if os.path.isfile(path):  # not removed by a trim since the scan
                    self._index[path] = Entry(size, mtime)
                    self._total += size
                    reorder = True
                continue
            self._total += size - entry.size
            entry.size = size
            if mtime > entry.last_used + TOUCH_SLACK_S:  # used (rewritten) by another process
                entry.last_used = mtime
                reorder = True
            elif entry.last_used > mtime + TOUCH_SLACK_S:
                touch.append((path, entry.last_used))
        if reorder:
            self._index = OrderedDict(sorted(self._index.items(), key=lambda i: i[1].last_used))
        return touch

    # --- writing (worker threads) ----------------------------------------------------------

    def write(
        self, store: ResultStore, pipeline_id: str, job_id: str, data: bytes | Sequence[bytes]
    ) -> Path:
        """Write a result with ``store`` and return its path *pinned*: the caller unpins it
        once the job's followers were told. Others are trimmed to make room under the cap.

        On a full disk, least recently used results are removed when that makes room and the
        write is tried once more; ``DiskFull`` when it still does not fit (nothing removed if
        removing could not help, nothing partial left).
        """
        path = store.path(pipeline_id, job_id)
        self.pin(path)
        try:
            try:
                store.write(pipeline_id, job_id, data)
            except errors.DiskFull:
                if not self.make_room(size_of(data)):
                    raise
                store.write(pipeline_id, job_id, data)
            self.add(path, size_of(data))
        except BaseException:
            self.unpin(path)
            raise
        self.trim()
        return path

    def make_room(self, size: int) -> bool:
        """Remove least recently used results (pinned ones spared) until ``size`` bytes fit
        on the disk; False, removing nothing, when even all of them would not make room."""
        need = size + ROOM_MARGIN
        with self._lock:
            spare = sum(e.size for p, e in self._index.items() if p not in self._pins)
        if shutil.disk_usage(self.root).free + spare < need:
            return False
        while shutil.disk_usage(self.root).free < need:
            with self._lock:
                victim = next((p for p in self._index if p not in self._pins), None)
                if victim is None:
                    return False
                self._remove(victim, "disk_full")
        return True

    def add(self, path: Path, size: int) -> None:
        """A result was written: the most recently used one now."""
        with self._lock:
            old = self._index.pop(path, None)
            self._total += size - (old.size if old is not None else 0)
            self._index[path] = Entry(size, self._clock())

    # --- trimming --------------------------------------------------------------------------

    def trim(self) -> int:
        """Remove what is past the bounds, least recently used first; how many went."""
        removed = 0
        while True:
            with self._lock:
                victim = self._victim(self._clock())
                if victim is None:
                    return removed
                self._remove(*victim)
            removed += 1

    def _victim(self, now: float) -> tuple[Path, Reason] | None:
        over = self._total > self.max_bytes
        newest = next(reversed(self._index), None)
        for path, entry in self._index.items():
            if path in self._pins:
                continue
            if self.max_age_s and now - entry.last_used > self.max_age_s:
                return path, "age"
            if over and path != newest:
                return path, "bytes"
            if not over:
                return None  # the rest were used later still: none is too old
        return None

    def _remove(self, path: Path, reason: Reason) -> None:
        """Unlink ``path`` and forget it (the lock held: no pin or write can slip in)."""
        entry = self._index.pop(path)
        self._total -= entry.size
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass  # another process removed it
        except OSError as exc:
            log.warning("could not remove result %s: %s", path, exc.strerror)
        self._evictions[reason] += 1

    # --- uses and pins (any thread, no I/O) ------------------------------------------------

    def used(self, path: Path) -> None:
        """A cache hit or a GET served ``path``: the most recently used result now."""
        with self._lock:
            entry = self._index.get(path)
            if entry is not None:
                entry.last_used = self._clock()
                self._index.move_to_end(path)

    def pin(self, path: Path) -> None:
        with self._lock:
            self._pins[path] += 1

    def unpin(self, path: Path) -> None:
        with self._lock:
            self._pins[path] -= 1
            if self._pins[path] <= 0:
                del self._pins[path]

    @contextlib.contextmanager
    def pinned(self, path: Path) -> Iterator[None]:
        self.pin(path)
        try:
            yield
        finally:
            self.unpin(path)

    def figures(self) -> schemas.ResultsHeld:
        with self._lock:
            return schemas.ResultsHeld(
                files=len(self._index),
                bytes=self._total,
                max_bytes=self.max_bytes,
                max_age_s=self.max_age_s,
                evictions=dict(self._evictions),
            )

    # --- the keeper (event loop) -----------------------------------------------------------

    def nudge(self) -> None:
        """On the loop: wake :meth:`keep` to trim when the folder is over its cap (a result
        past it was just unpinned)."""
        if self._total > self.max_bytes:
            self._wake.set()

    def interval_s(self) -> float:
        """How often :meth:`keep` rescans: ``RESCAN_S``, or a quarter of a short max age."""
        if not self.max_age_s:
            return RESCAN_S
        return min(RESCAN_S, max(MIN_RESCAN_S, self.max_age_s / 4))

    async def keep(self) -> None:
        """Rescan every :meth:`interval_s`, trim when nudged, each in a thread; runs until
        cancelled (the lifespan owns it). A failure is logged and the next round tried."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.interval_s()
        while True:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for swallows a cancel that
            # arrives as the wait ends, and the lifespan's cancel must stop this loop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - loop.time())):
                    await self._wake.wait()
            self._wake.clear()
            due = loop.time() >= deadline
            try:
                await asyncio.to_thread(self.rescan if due else self.trim)
            except Exception:
                log.exception("results retention: %s failed", "rescan" if due else "trim")
            if due:
                deadline = loop.time() + self.interval_s()


def scan(root: Path) -> Scan:
    """Every result under ``root``: ``{path: (size, mtime)}``; temp files, other files and
    folders that are not a pipeline's are left alone."""
    found: Scan = {}
    with contextlib.suppress(FileNotFoundError), os.scandir(root) as folders:
        for folder in folders:
            if folder.is_dir(follow_symlinks=False):
                _scan_folder(Path(folder.path), found)
    return found


def _scan_folder(folder: Path, found: Scan) -> None:
    prefix = folder.name + "-"
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            stem, dot, suffix = entry.name.rpartition(".")
            if entry.name.startswith(TEMP_PREFIX) or (dot, suffix) != (".", "png"):
                continue
            if not (is_job_id(stem) and stem.startswith(prefix)):
                continue
            with contextlib.suppress(OSError):  # removed meanwhile
                if entry.is_file(follow_symlinks=False):
                    facts = entry.stat(follow_symlinks=False)
                    found[folder / entry.name] = (facts.st_size, facts.st_mtime)
