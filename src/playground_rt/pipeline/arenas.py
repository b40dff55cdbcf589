"""onnxruntime's memory arenas, kept while the models work and given back once they rest.

A u2netp run needs ~250 MB of buffers, whatever the image size (its input is 320x320).
onnxruntime's CPU arena keeps them after the run, per session and per concurrent run: after a
warm-up with two workers and the all-cores session the server sat at ~1.3 GB. Without the
arena every run maps and faults those 250 MB afresh: 64,000 page faults and ~185 ms of kernel
time a run, 15-30 % of a run's CPU (measured: ``python -m bench.arena``). So an arena stays,
made to give memory back:

* one CPU arena for the whole process (:func:`use_shared_arena`: onnxruntime's environment
  allocator, extended by what is asked and no more, ``kSameAsRequested``), shared by every
  session, instead of one per session grown in powers of two;
* :class:`IdleRelease` shrinks it when no run has started for ``IDLE_RELEASE_S``: a run with
  the ``memory.enable_memory_arena_shrinkage`` run option frees every arena region not in
  use, then glibc's ``malloc_trim`` returns the freed heap to the system. Busy servers never
  pay for it; a resting one holds its model weights and little else.

The shrinking run is a real inference on zeros (onnxruntime shrinks only at the end of a
run; u2netp's input size is fixed): ~0.3 s of CPU once per rest (one run for the shared arena,
one per session that ran if the shared one could not be registered).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import logging
import threading
import time
import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np
import onnxruntime as ort

from playground_rt.errors import JobCancelled
from playground_rt.pipeline import model_runs

__all__ = [
    "BIG_IMAGE_PIXELS",
    "IDLE_RELEASE_S",
    "SHARED_ARENA",
    "IdleRelease",
    "malloc_trim",
    "released_after_run",
    "use_shared_arena",
]

log = logging.getLogger(__name__)

IDLE_RELEASE_S: float | None = 5.0
"""Seconds without a run after which a registry's arenas are shrunk (``None``: never; read
when a registry is made)."""

BIG_IMAGE_PIXELS = 4_000_000
"""A big image: its model run gives the arena back at its end (:func:`released_after_run`),
and its job's end gives the freed heap back (``malloc_trim``) so that the next big job,
perhaps on the other worker's heap, does not add to it."""

SHARED_ARENA = True
"""Sessions allocate from one process-wide arena (read by :func:`use_shared_arena`)."""

_SHRINK = {"memory.enable_memory_arena_shrinkage": "cpu:0"}
_KSAME_AS_REQUESTED = 1  # onnxruntime's ArenaExtendStrategy
_registered: bool | None = None
_register_lock = threading.Lock()
_thread = threading.local()


@contextlib.contextmanager
def released_after_run(release: bool = True) -> Iterator[None]:
    """Model runs on this thread inside the block (when ``release``) shrink the arena at
    their end, as the idle release does, so that the rest of a big image's job (cut-out,
    blend, PNG: ~150 MB at 12 MP) reuses those ~250 MB instead of adding to them. The next
    run faults its buffers in again (~185 ms), a price worth paying only for big images."""
    before = getattr(_thread, "release", False)
    _thread.release = release or before
    try:
        yield
    finally:
        _thread.release = before


def use_shared_arena(options: ort.SessionOptions) -> None:
    """Make sessions created with ``options`` use the process's one CPU arena (registered on
    first use; if onnxruntime refuses it, sessions keep their own arenas)."""
    global _registered
    if not SHARED_ARENA:
        return
    with _register_lock:
        if _registered is None:
            kind, memory = ort.OrtAllocatorType, ort.OrtMemType
            info = ort.OrtMemoryInfo("Cpu", kind.ORT_ARENA_ALLOCATOR, 0, memory.DEFAULT)
            config = ort.OrtArenaCfg({"arena_extend_strategy": _KSAME_AS_REQUESTED})
            try:
                ort.create_and_register_allocator(info, config)
                _registered = True
            except Exception:  # e.g. registered by other code of the process: use our own
                log.warning("no shared onnxruntime arena; sessions keep their own", exc_info=True)
                _registered = False
    if _registered:
        options.add_session_config_entry("session.use_env_allocators", "1")


class _Tracked:
    """An ``InferenceSession`` that tells its :class:`IdleRelease` when it runs; every other
    attribute is the session's own."""

    def __init__(self, inner: Any, owner: IdleRelease) -> None:
        self._inner = inner
        self._owner = owner
        self.used = False
        """Ran since its arena was last shrunk."""

    def run(self, outputs: Any, feeds: Any, run_options: ort.RunOptions | None = None) -> Any:
        if run_options is None:
            release = getattr(_thread, "release", False)  # see released_after_run
            run_options = model_runs.options(_SHRINK if release else None)
        self._owner.enter(self)
        try:
            return model_runs.run(self._inner, outputs, feeds, run_options)
        finally:
            self._owner.leave()

    def shrink(self) -> None:
        feeds = {}
        for spec in self._inner.get_inputs():
            if not all(isinstance(side, int) and side > 0 for side in spec.shape):
                return  # a dynamic input size: no safe dummy input; keep the arena
            feeds[spec.name] = np.zeros(spec.shape, dtype=_dtype(spec.type))
        model_runs.run(self._inner, None, feeds, model_runs.options(_SHRINK))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class IdleRelease:
    """Shrinks the arenas of the sessions it tracks once ``after_s`` passed without a run.

    ``track(session)`` wraps a rembg session's ``inner_session``. A daemon thread sleeps
    until a run ends with nothing in flight, waits ``after_s`` more (any new run restarts the
    wait) and shrinks each session that ran meanwhile. ``after_s=None`` never shrinks.
    """

    def __init__(self, after_s: float | None) -> None:
        self.after_s = after_s
        self.releases = 0
        self._cond = threading.Condition()
        self._running = 0
        self._last_end = time.monotonic()
        self._sessions: weakref.WeakSet[_Tracked] = weakref.WeakSet()
        self._thread: threading.Thread | None = None

    def track(self, session: Any) -> None:
        """Route ``session.inner_session``'s runs through this tracker."""
        tracked = _Tracked(session.inner_session, self)
        session.inner_session = tracked
        self._sessions.add(tracked)

    def enter(self, session: _Tracked) -> None:
        with self._cond:
            self._running += 1
            session.used = True

    def leave(self) -> None:
        with self._cond:
            self._running -= 1
            self._last_end = time.monotonic()
            if self._running == 0 and self.after_s is not None:
                self._start()
                self._cond.notify()

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="arena-release", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        assert self.after_s is not None
        while True:
            with self._cond:
                self._cond.wait_for(self._dirty_and_idle)
                wait = self._last_end + self.after_s - time.monotonic()
                if wait > 0:  # a run that starts meanwhile holds the next check until it ends
                    self._cond.wait(wait)
                    continue
                due = [s for s in self._sessions if s.used]
                for session in due:
                    session.used = False
                if _registered:  # one shrinking run frees the one arena they all share
                    due = due[:1]
            self._shrink(due)

    def _dirty_and_idle(self) -> bool:
        return self._running == 0 and any(s.used for s in self._sessions)

    def _shrink(self, sessions: list[_Tracked]) -> None:
        started = time.perf_counter()
        for session in sessions:
            try:
                session.shrink()
            except JobCancelled:  # the process is exiting
                return
            except Exception:  # a task boundary: a failed shrink must not kill the thread
                log.exception("shrinking an onnxruntime arena failed")
        malloc_trim()
        self.releases += 1
        log.debug("arenas of %d sessions shrunk in %.0f ms", len(sessions), _ms(started))


_DTYPES: dict[str, type[np.generic]] = {"tensor(float16)": np.float16, "tensor(double)": np.float64}


def _dtype(onnx_type: str) -> type[np.generic]:
    return _DTYPES.get(onnx_type, np.float32)


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def malloc_trim() -> None:
    """glibc: give the free memory of every thread's heap back to the system (elsewhere:
    nothing). A worker thread's heap otherwise keeps what its last big job freed, and the
    next big job may run on the other worker and grow that one's heap too."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        _libc().malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL:
    # Looked up once: find_library runs ``ldconfig -p`` (2-5 ms), and trims follow big jobs.
    return ctypes.CDLL(ctypes.util.find_library("c"))
