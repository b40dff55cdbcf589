"""Content-addressed results on disk: ``{results_root}/{pipeline_id}/{job_id}.png``.

The job id is derived from the cache key, so the path alone tells whether a result exists,
also after a restart. Files are written to a temp file in the same folder and
``os.replace``d into place, so no reader ever sees half a PNG; a file that is not a whole
PNG (wrong signature, no IEND trailer) counts as missing and is recomputed. The server keeps
the folder within its byte and age bounds (``retention``); a removed result is missing too,
and recomputed (same bytes, same path) when it is asked for again.

Several processes may share one results folder. A temp file is named after its writer
(``.tmp-{host}-{pid}-{random}.png``), so a starting process's :meth:`ResultStore.sweep`
removes only what a dead writer left: temps of processes that no longer run on this host,
temps without a writer in their name (left by versions before writer names), and any temp
older than ``STALE_TEMP_S`` (a writer on another host that died).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from playground_rt import errors

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TRAILER = b"IEND\xaeB`\x82"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_S = 3600.0
"""A temp this old is a crash's leftover whoever wrote it: a write takes seconds at most."""

JOB_ID_PATTERN = "^[a-z][a-z0-9_]{0,63}-[0-9a-f]{32}$"
"""Every job id: ``{pipeline_id}-{32 lowercase hex}`` (``pipelines.job_id``; pipeline ids are
lowercase names); the OpenAPI document publishes it as the path parameter's ``pattern``. No
dot, slash or NUL can pass, so a checked id is safe in a path."""
_JOB_ID = re.compile(JOB_ID_PATTERN.removeprefix("^").removesuffix("$"))
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def is_job_id(text: str) -> bool:
    return _JOB_ID.fullmatch(text) is not None


def check_job_id(text: str) -> str:
    """``text`` if it has a job id's shape, else ``UnknownJob``: one check for every road in
    (a client-given id never reaches a path on disk unchecked)."""
    if not is_job_id(text):
        raise errors.UnknownJob(
            f"no job {text[:100]!r}: a job id is '<pipeline_id>-<32 hex digits>'"
        )
    return text


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, pipeline_id: str, job_id: str) -> Path:
        assert is_job_id(job_id) and job_id.startswith(pipeline_id + "-"), job_id
        return self.root / pipeline_id / f"{job_id}.png"

    def lookup(self, pipeline_id: str, job_id: str) -> Path | None:
        """The result's path if a whole PNG is there; a damaged one is removed. ``None``
        also for anything that is not a job id of ``pipeline_id``."""
        if not is_job_id(job_id) or not job_id.startswith(pipeline_id + "-"):
            return None
        path = self.path(pipeline_id, job_id)
        try:
            with path.open("rb") as handle:
                head = handle.read(8)
                handle.seek(-8, os.SEEK_END)
                tail = handle.read(8)
        except OSError:
            return None
        if head == PNG_SIGNATURE and tail == PNG_TRAILER:
            return path
        with contextlib.suppress(OSError):
            path.unlink()
        return None

    def write(self, pipeline_id: str, job_id: str, data: bytes | Sequence[bytes]) -> Path:
        """Atomically place ``data`` (the file's bytes, or its pieces in order;
        world-readable, as results are served) and return the path; ``DiskFull`` when there
        is no room (nothing is left behind)."""
        path = self.path(pipeline_id, job_id)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _raise_if_full(exc, path, size_of(data))
            raise
        # No fsync: a file torn by a power cut fails lookup()'s whole-PNG check and is
        # recomputed, so durability would cost every job milliseconds for nothing.
        write_atomic(path, data)
        return path

    def sweep(self, now: float | None = None) -> int:
        """Remove temp files whose writer is gone; returns how many. Run at start-up.

        A temp goes when its writer (host and pid in its name) is this host's and no longer
        runs, when its name has no writer, or when it is older than ``STALE_TEMP_S``; a live
        writer's temp stays, in this process or another one sharing the folder.
        """
        removed = 0
        if not self.root.is_dir():
            return 0
        now = time.time() if now is None else now
        for temp in self.root.glob(f"*/{TEMP_PREFIX}*"):
            try:
                stale = now - temp.lstat().st_mtime > STALE_TEMP_S
                if stale or _writer_gone(temp.name):
                    temp.unlink()
                    removed += 1
            except OSError:  # gone meanwhile: its writer renamed or removed it
                continue
        return removed


def size_of(data: bytes | Sequence[bytes]) -> int:
    """The byte count of a file given whole or in pieces."""
    return len(data) if isinstance(data, bytes) else sum(map(len, data))


def write_atomic(
    path: Path,
    data: bytes | Iterable[bytes],
    temp_suffix: str | None = None,
    verify: Callable[[], None] | None = None,
) -> None:
    """Write ``data`` (bytes, or chunks streamed in) to a temp file beside ``path`` (named
    after its writer, see the module docstring), world-readable whatever the umask, then
    ``os.replace`` it into place: readers see the old file or the whole new one. ``verify``
    runs once everything is written, before the replace; what it raises abandons the file.
    ``temp_suffix`` (default: ``path``'s) keeps a half-written file out of listings that go
    by suffix. A full filesystem or quota raises ``DiskFull``, the temp file removed."""
    suffix = path.suffix if temp_suffix is None else temp_suffix
    size = len(data) if isinstance(data, bytes) else 0
    temp = path.parent / f"{TEMP_PREFIX}{_HOST}-{os.getpid()}-{secrets.token_hex(6)}{suffix}"
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        _raise_if_full(exc, path, size)
        raise
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            for chunk in [data] if isinstance(data, bytes) else data:
                handle.write(chunk)
                size += 0 if isinstance(data, bytes) else len(chunk)
        if verify is not None:
            verify()
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            _raise_if_full(exc, path, size)
        raise


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _raise_if_full(exc: OSError, path: Path, size: int) -> None:
    """``DiskFull`` (from ``exc``) when the filesystem or a quota is out of room."""
    if exc.errno in DISK_FULL_ERRNOS:
        raise errors.DiskFull(
            f"no room left on the disk to write {path.parent.name}/{path.name} "
            f"({size} bytes): {exc.strerror}; nothing was written"
        ) from exc


def _writer_gone(name: str) -> bool:
    """Whether the temp ``name`` was written by a process of this host that no longer runs,
    or names no writer at all."""
    writer = name.removeprefix(TEMP_PREFIX).rpartition("-")[0]  # less the random part
    host, _, pid = writer.rpartition("-")
    if not host or not pid.isdigit():
        return True  # an older version's name (mkstemp's): no writer to ask
    if host != _HOST or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False
