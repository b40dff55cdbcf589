"""Masks computed once: ``masks.remove`` is ``rembg.remove``, warm or cold; the cache's bound."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import rembg
from PIL import Image
from rembg.sessions.base import BaseSession

from playground_rt import errors
from playground_rt.pipeline import masks, registry
from playground_rt.pipeline.masks import MaskCache, MaskKey
from playground_rt.pipeline.ops.base import OpContext, SessionProvider

from .conftest import Server, encode, require_model, sample_image

KEY = "0" * 64


@pytest.fixture(scope="module")
def u2netp() -> BaseSession:
    require_model()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session: BaseSession = rembg.new_session("u2netp", sess_opts=options)
    return session


class Counting:
    """A session that counts its ``predict`` calls (inference runs)."""

    def __init__(self, inner: BaseSession) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.calls = 0

    def predict(self, image: Image.Image, *args: Any, **kwargs: Any) -> list[Image.Image]:
        self.calls += 1
        result: list[Image.Image] = self.inner.predict(image, *args, **kwargs)
        return result


class OneSession(SessionProvider):
    def __init__(self, session: object) -> None:
        self._session = session

    def session(self, model: str, wide: bool = False) -> Any:
        return self._session

    def custom(self, path: Path) -> Any:
        return self._session


def subject(width: int = 160, height: int = 120, mode: str = "RGB") -> Image.Image:
    return sample_image(width, height, seed=11, mode=mode)


def same(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == b.mode and a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))


PARAMS = [
    pytest.param({}, id="defaults"),
    pytest.param({"only_mask": True}, id="only_mask"),
    pytest.param({"post_process_mask": True}, id="post_process"),
    pytest.param({"only_mask": True, "post_process_mask": True}, id="mask+post_process"),
    pytest.param({"alpha_matting": True, "alpha_matting_erode_size": 4}, id="alpha_matting"),
    pytest.param(
        {"alpha_matting": True, "alpha_matting_foreground_threshold": 255}, id="matting-fallback"
    ),
]


@pytest.mark.parametrize("params", PARAMS)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_remove_is_rembg_remove_cold_and_warm(
    u2netp: BaseSession, params: dict[str, Any], mode: str
) -> None:
    image = subject(mode=mode)
    expected = rembg.remove(image, session=u2netp, **params)
    assert isinstance(expected, Image.Image)
    counting = Counting(u2netp)
    ctx = OpContext(image_key=KEY, masks=MaskCache(1 << 20))
    cold = masks.remove(ctx, image, session=counting, **params)
    warm = masks.remove(ctx, image, session=counting, **params)
    assert same(cold, expected)
    assert same(warm, expected)
    assert counting.calls == 1
    uncached = masks.remove(OpContext(), image, session=u2netp, **params)
    assert same(uncached, expected)


def test_remove_applies_the_exif_orientation_as_rembg_does(u2netp: BaseSession) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    subject(120, 80).save(buffer, "JPEG", exif=exif)
    opened = Image.open(io.BytesIO(buffer.getvalue()))
    expected = rembg.remove(opened, session=u2netp)
    assert isinstance(expected, Image.Image)
    assert expected.size == (80, 120)
    assert same(masks.remove(OpContext(), opened, session=u2netp), expected)


def test_the_kept_mask_is_never_handed_out(u2netp: BaseSession) -> None:
    ctx = OpContext(image_key=KEY, masks=MaskCache(1 << 20))
    first = masks.remove(ctx, subject(), session=u2netp, only_mask=True)
    first.paste(0, (0, 0, first.width, first.height))  # the caller may scribble on its result
    again = masks.remove(ctx, subject(), session=u2netp, only_mask=True)
    assert np.asarray(again).max() > 0


@pytest.mark.parametrize(
    "second",
    [
        pytest.param({"strength": 0.5}, id="strength"),
        pytest.param({"strength": 0.85, "bgcolor": [0, 0, 255, 255]}, id="bgcolor"),
        pytest.param({"only_mask": True, "strength": 0.3}, id="only_mask"),
        pytest.param({"post_process_mask": True}, id="post_process_mask"),
    ],
)
def test_op_reblends_without_inference(u2netp: BaseSession, second: dict[str, Any]) -> None:
    plan_first = registry.get_pipeline("rembg").plan({"strength": 0.85})
    plan_second = registry.get_pipeline("rembg").plan(second)
    counting = Counting(u2netp)
    cache = MaskCache(1 << 20)

    def run(plan: registry.Plan, cache: MaskCache, session: object) -> Image.Image:
        ctx = OpContext(models=OneSession(session), image_key=KEY, masks=cache)
        return registry.apply(plan.steps, subject(), ctx)

    run(plan_first, cache, counting)
    warm = run(plan_second, cache, counting)
    assert counting.calls == 1
    assert cache.hits == 1
    cold = run(plan_second, MaskCache(0), u2netp)
    assert same(warm, cold)


def test_keys_follow_the_ops_before_the_model() -> None:
    seen: list[str | None] = []

    def spy_op(image: Image.Image, params: Any, ctx: OpContext) -> Image.Image:
        seen.append(ctx.image_key)
        return image

    plan = registry.get_pipeline("preprocessing").plan({"blur": {"kernelSize": 3}})
    other = registry.get_pipeline("preprocessing").plan({"blur": {"kernelSize": 5}})
    spy = registry.Step(
        plan.steps[0].op.__class__(
            "spy", plan.steps[0].op.params, spy_op, client=False, summary="spy"
        ),
        plan.steps[0].params,
    )
    for steps in ((spy,), (*plan.steps, spy), (*other.steps, spy), (*plan.steps, spy)):
        registry.apply(steps, subject(), OpContext(image_key=KEY))
    assert seen[0] == KEY
    assert seen[1] not in (None, KEY)
    assert seen[2] not in (None, KEY, seen[1])  # other params, another image
    assert seen[3] == seen[1]  # deterministic


# --- the cache itself -----------------------------------------------------------------------


def mask(side: int, value: int = 1) -> tuple[Image.Image, ...]:
    return (Image.new("L", (side, side), value),)


def key(name: str) -> MaskKey:
    return (name, (1, 1), "RGB", "model:u2netp")


def test_bounded_by_bytes_least_recently_used_first() -> None:
    cache = MaskCache(250)
    assert cache.put(key("a"), mask(10))  # 100 bytes
    assert cache.put(key("b"), mask(10))
    assert cache.get(key("a")) is not None  # a is now the most recent
    assert cache.put(key("c"), mask(7))  # 49 bytes: 249, fits
    assert cache.nbytes == 249 and len(cache) == 3
    assert cache.put(key("d"), mask(5))  # 25 bytes: b (least recent) goes
    assert cache.get(key("b")) is None
    assert [cache.get(key(k)) is not None for k in "acd"] == [True, True, True]
    assert cache.nbytes == 174 and cache.evictions == 1
    assert not cache.put(key("huge"), mask(16))  # 256 > 250: never kept, nothing evicted
    assert cache.nbytes == 174 and len(cache) == 3
    assert cache.put(key("a"), mask(12))  # replaced: 144 + 49 + 25 = 218
    assert cache.nbytes == 218


def test_zero_keeps_nothing() -> None:
    cache = MaskCache(0)
    assert not cache.put(key("a"), mask(1))
    made, hit = cache.masks(key("a"), lambda: mask(1))
    assert made[0].size == (1, 1)
    assert not hit and len(cache) == 0


def test_custom_sessions_are_told_apart_by_identity() -> None:
    class Session:
        model_name = "u2net_custom"

    cache = MaskCache(1000)
    first, second = Session(), Session()
    cache.put(key("a"), mask(3), session=first)
    assert cache.get(key("a"), first) is not None
    assert cache.get(key("a"), second) is None
    del first  # a replaced checkpoint: its session is gone, so are its masks
    assert cache.get(key("a"), Session()) is None


def test_one_computation_per_key_at_a_time() -> None:
    cache = MaskCache(1000)
    calls, started = [], threading.Event()

    def slow() -> tuple[Image.Image, ...]:
        calls.append(1)
        started.set()
        time.sleep(0.3)
        return mask(3)

    results: list[tuple[tuple[Image.Image, ...], bool]] = []
    first = threading.Thread(target=lambda: results.append(cache.masks(key("a"), slow)))
    first.start()
    started.wait(5)
    results.append(cache.masks(key("a"), slow))  # waits for the first one's mask
    first.join()
    assert len(calls) == 1
    assert sorted(hit for _, hit in results) == [False, True]
    assert results[0][0] is results[1][0]


def test_a_waiting_job_can_be_cancelled() -> None:
    cache = MaskCache(1000)
    release, started = threading.Event(), threading.Event()

    def blocked() -> tuple[Image.Image, ...]:
        started.set()
        release.wait(5)
        return mask(3)

    worker = threading.Thread(target=lambda: cache.masks(key("a"), blocked))
    worker.start()
    started.wait(5)

    def cancelled() -> None:
        raise errors.JobCancelled("cancelled by the client")

    with pytest.raises(errors.JobCancelled):
        cache.masks(key("a"), blocked, check=cancelled)
    release.set()
    worker.join()
    assert cache.get(key("a")) is not None


# --- through the server ---------------------------------------------------------------------


async def test_a_strength_change_on_the_server_reuses_the_mask(server: Server) -> None:
    require_model()
    data_file = server.settings.data_root / "masks" / "subject.png"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_bytes(encode(subject()))
    cache = server.state.jobs.masks
    decoded = server.state.jobs.work.decoded
    before = (cache.hits, cache.misses)
    decoded_before = decoded.hits
    for strength in (0.85, 0.5, 1):
        request = {
            "pipeline_id": "rembg",
            "image_path": "masks/subject.png",
            "params": {"strength": strength},
        }
        answer = await server.post("/api/pipelines/fallback", request)
        assert answer.json()["status"] == "completed", answer.text
    assert (cache.hits - before[0], cache.misses - before[1]) == (2, 1)
    assert decoded.hits - decoded_before == 2  # and the image was decoded once
