"""The result store on disk: job id shapes, atomic writes, and a sweep that spares the temp
files of writers still running (several processes may share one outputs folder)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from playground_rt import errors
from playground_rt.pipeline import results as cache
from playground_rt.pipeline.results import STALE_TEMP_S, TEMP_PREFIX, ResultStore

JOB = "preprocessing-" + "a" * 32
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64 + b"IEND\xaeB`\x82"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("preprocessing-..", id="dotdot"),
        pytest.param("preprocessing-\x00", id="nul"),
        pytest.param("preprocessing-" + "A" * 32, id="uppercase-hex"),
        pytest.param("preprocessing-" + "a" * 31, id="short"),
        pytest.param("preprocessing-" + "a" * 32 + "\n", id="trailing-newline"),
        pytest.param("../rembg-" + "a" * 32, id="path"),
        pytest.param("", id="empty"),
    ],
)
def test_only_job_id_shapes_pass(text: str, tmp_path: Path) -> None:
    assert not cache.is_job_id(text)
    with pytest.raises(errors.UnknownJob, match="32 hex"):
        cache.check_job_id(text)
    assert ResultStore(tmp_path).lookup("preprocessing", text) is None


def test_write_then_lookup(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    assert cache.check_job_id(JOB) == JOB
    path = store.write("preprocessing", JOB, PNG)
    assert store.lookup("preprocessing", JOB) == path
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp left


def test_a_result_is_written_from_its_pieces(tmp_path: Path) -> None:
    """Encoders hand over their pieces: the file is them one after the other, never joined."""
    store = ResultStore(tmp_path)
    path = store.write("preprocessing", JOB, [PNG[:5], PNG[5:40], PNG[40:]])
    assert path.read_bytes() == PNG and store.lookup("preprocessing", JOB) == path
    assert cache.size_of([PNG[:5], PNG[5:]]) == len(PNG) == cache.size_of(PNG)


def temps(root: Path) -> list[Path]:
    return list(root.glob(f"*/{TEMP_PREFIX}*"))


def test_sweep_spares_a_write_in_flight(tmp_path: Path) -> None:
    """FINDINGS D22: process B's start-up sweep removed process A's temp mid-write."""
    root = tmp_path / "playground"
    writer, sweeper = ResultStore(root), ResultStore(root)
    data = PNG[:8] + os.urandom(64 << 20) + PNG[-8:]
    failure: list[BaseException] = []

    def write() -> None:
        try:
            writer.write("preprocessing", JOB, data)
        except BaseException as exc:
            failure.append(exc)

    (root / "preprocessing").mkdir(parents=True)
    thread = threading.Thread(target=write)
    thread.start()
    swept, deadline = 0, time.monotonic() + 10
    while not temps(root) and thread.is_alive() and time.monotonic() < deadline:
        pass  # until the temp file exists
    while thread.is_alive():
        swept += sweeper.sweep()
    thread.join()
    assert not failure, failure
    assert swept == 0
    assert writer.lookup("preprocessing", JOB) is not None


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_removes_what_dead_or_old_writers_left(tmp_path: Path) -> None:
    store = ResultStore(tmp_path)
    folder = tmp_path / "preprocessing"
    folder.mkdir()
    host = cache._HOST
    dead = folder / f"{TEMP_PREFIX}{host}-{dead_pid()}-0123456789ab.png"
    live = folder / f"{TEMP_PREFIX}{host}-{os.getppid()}-0123456789ab.png"
    other_host = folder / f"{TEMP_PREFIX}elsewhere-{dead_pid()}-0123456789ab.png"
    legacy = folder / f"{TEMP_PREFIX}k2j4h5_x.png"  # a mkstemp name (before writer names)
    old = folder / f"{TEMP_PREFIX}elsewhere-1-0123456789ab.png"
    for temp in (dead, live, other_host, legacy, old):
        temp.write_bytes(b"partial")
    stale = time.time() - STALE_TEMP_S - 60
    os.utime(old, (stale, stale))
    assert store.sweep() == 3
    assert sorted(p.name for p in temps(tmp_path)) == sorted(p.name for p in (live, other_host))
    assert store.sweep(now=time.time() + STALE_TEMP_S + 60) == 2
