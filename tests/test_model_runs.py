"""Model runs on daemon threads never abort the process's exit: they are stopped first.

Each case runs in a fresh interpreter: stopping the runs is once per process, and the point is
how that process ends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from .conftest import MODEL_HOME, require_model

# The server's situation: a registry's session (tracked, as every session is), running back to
# back on a daemon thread, as an executor worker or the idle arena release runs it.
LOOPING = textwrap.dedent(
    f"""
    import json, sys, threading, time
    from pathlib import Path
    import numpy as np
    from playground_rt.errors import JobCancelled
    from playground_rt.pipeline import model_runs
    from playground_rt.pipeline.sessions import ModelRegistry

    registry = ModelRegistry(Path({str(MODEL_HOME)!r}), Path("."), intra_op_threads=2)
    inner = registry.session("u2netp").inner_session
    feeds = {{inner.get_inputs()[0].name: np.zeros((1, 3, 320, 320), np.float32)}}
    runs, ended = [0], []

    def loop():
        try:
            while True:
                inner.run(None, feeds)
                runs[0] += 1
        except JobCancelled as exc:
            ended.append(str(exc))

    threading.Thread(target=loop, daemon=True).start()
    while runs[0] < 2:
        time.sleep(0.001)
    time.sleep(0.05)  # well inside the third run (~0.1-0.3 s)
    """
)


def python(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )


def test_exit_while_a_model_runs_on_a_daemon_thread_ends_cleanly() -> None:
    """Before: ``terminate called without an active exception``, exit status 134."""
    require_model()
    done = python(LOOPING + "print('exiting', runs[0])")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("exiting")
    assert "terminate called" not in done.stderr


def test_stop_all_stops_the_run_in_flight_and_refuses_new_ones() -> None:
    require_model()
    done = python(
        LOOPING
        + textwrap.dedent(
            """
            started = time.perf_counter()
            stopped = model_runs.stop_all(wait_s=10)
            took = time.perf_counter() - started
            time.sleep(0.05)
            try:
                inner.run(None, feeds)
                refused = False
            except JobCancelled:
                refused = True
            print(json.dumps({"stopped": stopped, "took": took, "ended": ended,
                              "refused": refused}))
            """
        )
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    assert report["stopped"] is True
    assert report["took"] < 1.0  # terminated between kernels, not run to its end and more
    assert report["ended"] == ["the process is exiting"]
    assert report["refused"] is True


def test_options_carry_their_config_entries() -> None:
    from playground_rt.pipeline import model_runs

    made = model_runs.options({"memory.enable_memory_arena_shrinkage": "cpu:0"})
    assert made.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    assert made.terminate is False
    assert made is not model_runs.options()
