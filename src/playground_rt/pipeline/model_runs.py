"""Model runs the process can stop: each with run options of its own, stopped before exit.

An onnxruntime run still computing when the process exits aborts it: ``exit`` destroys
onnxruntime's statics under the running kernels, and the C++ runtime ends the process with
``terminate called without an active exception`` (exit status 134, a core dump). Runs happen
on daemon threads (the executor's workers, the idle arena release), which exit does not wait
for. So every run goes through :func:`run`, and at exit :func:`stop_all` sets ``terminate`` on
the runs in flight (onnxruntime checks it between kernels: a run ends within one node),
refuses new ones, and waits for them to end, at most ``EXIT_WAIT_S``.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Mapping
from typing import Any

import onnxruntime as ort

from playground_rt.errors import JobCancelled

__all__ = ["EXIT_WAIT_S", "options", "run", "stop_all"]

EXIT_WAIT_S = 10.0
"""How long the process's exit waits for the model runs it stopped to end."""

_cond = threading.Condition()
_in_flight: list[ort.RunOptions] = []
_exiting = False


def options(config: Mapping[str, str] | None = None) -> ort.RunOptions:
    """Fresh run options carrying ``config`` (onnxruntime's run config entries)."""
    made = ort.RunOptions()
    for key, value in (config or {}).items():
        made.add_run_config_entry(key, value)
    return made


def run(
    session: ort.InferenceSession, outputs: Any, feeds: Any, run_options: ort.RunOptions
) -> Any:
    """``session.run(outputs, feeds, run_options)``, stopped if the process exits meanwhile.

    ``run_options`` must belong to this run alone (:func:`options`): stopping sets its
    ``terminate``. Raises ``JobCancelled`` once the process is exiting (a run stopped
    then included).
    """
    with _cond:
        if _exiting:
            raise JobCancelled("the process is exiting")
        _in_flight.append(run_options)
    try:
        return session.run(outputs, feeds, run_options)
    except Exception:
        if _exiting and run_options.terminate:  # stopped by stop_all: not a failure
            raise JobCancelled("the process is exiting") from None
        raise
    finally:
        with _cond:
            _in_flight.remove(run_options)
            _cond.notify_all()


def stop_all(wait_s: float = EXIT_WAIT_S) -> bool:
    """Stop the runs in flight and refuse new ones; True once none is left (within
    ``wait_s``). Registered to run at exit."""
    global _exiting
    with _cond:
        _exiting = True
        for run_options in _in_flight:
            run_options.terminate = True
        return _cond.wait_for(lambda: not _in_flight, wait_s)


atexit.register(stop_all)
