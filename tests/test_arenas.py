"""onnxruntime's arenas: shared and shrunk when the models rest, with results unchanged."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import rembg
from PIL import Image

from playground_rt.pipeline import arenas
from playground_rt.pipeline.sessions import ModelRegistry

from .conftest import MODEL_HOME, require_model, sample_image


def _shrinks(run_options: ort.RunOptions) -> bool:
    try:
        entry = run_options.get_run_config_entry("memory.enable_memory_arena_shrinkage")
    except RuntimeError:  # onnxruntime's answer for an entry never set
        return False
    return bool(entry == "cpu:0")


class FakeInput:
    name = "x"
    shape = (1, 3, 4, 4)
    type = "tensor(float)"


class FakeInner:
    """An InferenceSession stand-in that records its runs (and whether they shrank)."""

    def __init__(self) -> None:
        self.runs: list[bool] = []
        self.gate = threading.Event()
        self.gate.set()

    def run(self, outputs: Any, feeds: dict[str, Any], run_options: Any = None) -> list[Any]:
        self.gate.wait(5)
        self.runs.append(_shrinks(run_options))
        assert feeds["x"].shape == FakeInput.shape
        return [feeds["x"]]

    def get_inputs(self) -> list[FakeInput]:
        return [FakeInput()]

    def get_providers(self) -> list[str]:
        return ["CPUExecutionProvider"]


class FakeSession:
    def __init__(self) -> None:
        self.inner = FakeInner()
        self.inner_session: Any = self.inner


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_shrinks_once_after_a_rest() -> None:
    release = arenas.IdleRelease(0.2)
    session = FakeSession()
    release.track(session)
    assert session.inner_session.get_providers() == ["CPUExecutionProvider"]  # delegated
    zeros = {"x": np.zeros(FakeInput.shape, np.float32)}
    session.inner_session.run(None, zeros)
    assert session.inner.runs == [False]
    assert wait_for(lambda: release.releases == 1)
    assert session.inner.runs[-1] is True  # the shrinking run carries the run option
    time.sleep(0.4)
    assert release.releases == 1  # nothing ran since: nothing to give back


def test_a_run_in_flight_or_recent_holds_the_release() -> None:
    release = arenas.IdleRelease(0.3)
    session = FakeSession()
    release.track(session)
    zeros = {"x": np.zeros(FakeInput.shape, np.float32)}
    session.inner_session.run(None, zeros)
    time.sleep(0.2)
    session.inner.gate.clear()
    busy = threading.Thread(target=lambda: session.inner_session.run(None, zeros))
    busy.start()
    time.sleep(0.5)  # past the first run's deadline, but the second one is still running
    assert release.releases == 0
    session.inner.gate.set()
    busy.join()
    assert wait_for(lambda: release.releases == 1)


def test_none_never_shrinks() -> None:
    release = arenas.IdleRelease(None)
    session = FakeSession()
    release.track(session)
    session.inner_session.run(None, {"x": np.zeros(FakeInput.shape, np.float32)})
    time.sleep(0.2)
    assert release.releases == 0 and session.inner.runs == [False]


@pytest.fixture(scope="module")
def subject() -> Image.Image:
    return sample_image(160, 120, seed=21)


def test_registry_sessions_give_rembgs_results_before_and_after_a_shrink(
    subject: Image.Image, tmp_path: Path
) -> None:
    require_model()
    registry = ModelRegistry(MODEL_HOME, tmp_path, intra_op_threads=1, wide_threads=2)
    registry.idle_release.after_s = 0.2
    plain = ort.SessionOptions()  # onnxruntime's defaults: its own arena, every core
    reference = rembg.remove(subject, session=rembg.new_session("u2netp", sess_opts=plain))
    assert isinstance(reference, Image.Image)
    for wide in (False, True):
        session = registry.session("u2netp", wide=wide)
        before = rembg.remove(subject, session=session)
        assert isinstance(before, Image.Image)
        assert np.array_equal(np.asarray(before), np.asarray(reference))
    assert wait_for(lambda: registry.idle_release.releases >= 1, timeout=60)
    after = rembg.remove(subject, session=registry.session("u2netp"))
    assert isinstance(after, Image.Image)
    assert np.array_equal(np.asarray(after), np.asarray(reference))


def test_runs_inside_released_after_run_shrink_at_their_end() -> None:
    """A big image's model run gives the arena back when it ends (so the rest of its job
    reuses that memory); runs outside the block, or with ``release=False``, keep it."""
    release = arenas.IdleRelease(None)
    session = FakeSession()
    release.track(session)
    feeds = {"x": np.zeros(FakeInput.shape, np.float32)}
    session.inner_session.run(None, feeds)
    with arenas.released_after_run(False):
        session.inner_session.run(None, feeds)
    with arenas.released_after_run():
        session.inner_session.run(None, feeds)
        with arenas.released_after_run(False):  # an inner block does not undo the outer one
            session.inner_session.run(None, feeds)
    session.inner_session.run(None, feeds)
    assert session.inner.runs == [False, False, True, True, False]
