"""Faults a real deployment meets, against a real in-process uvicorn: clients that vanish
mid-job, a thousand idle sockets, a damaged cache file, ops that raise or overrun their
budget, a client inventing telemetry sources.

Covered elsewhere, not repeated here: a client that stops reading is evicted after the send
timeout while the others get every frame (``test_hub.py::
test_a_stuck_reader_is_evicted_and_a_fast_one_gets_every_frame``); Redis restarting under two
hubs (``test_hub.py::test_redis_restart_local_sockets_keep_going``); SIGTERM and start-up
sweeping (``test_shutdown.py``, which needs a subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import queue
import resource
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from playground_rt import errors, schemas
from playground_rt.pipeline import registry
from playground_rt.pipeline.ops import OPS
from playground_rt.pipeline.ops.base import OpContext

from .conftest import Server, b64, encode, make_settings, running, sample_image
from .hubfixtures import client
from .rawclients import raw_socket

FALLBACK = "/api/pipelines/fallback"
SLOW_PARAMS = {"strength": 1.0, "alpha_matting": True}  # about 1.5 s a job on 2 cores


def image(seed: int, size: tuple[int, int] = (96, 72)) -> str:
    return b64(encode(sample_image(*size, seed=seed)))


@pytest.fixture
def server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record at WARNING or above, uvicorn's own loggers included (they don't
    propagate to the root logger caplog listens on)."""
    caplog.set_level(logging.WARNING)
    uvicorn_logger = logging.getLogger("uvicorn")
    uvicorn_logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        uvicorn_logger.removeHandler(caplog.handler)


def errors_in(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


# --- clients that go away -----------------------------------------------------------------


async def test_client_dropping_mid_job(
    tmp_path: Path, server_logs: pytest.LogCaptureFixture
) -> None:
    """A fallback whose HTTP client hangs up: the job still finishes, is cached, and the
    server logs nothing about the vanished client."""
    body = {
        "pipeline_id": "rembg",
        "image_base64": image(5, (1024, 768)),
        "params": SLOW_PARAMS,
        "taskId": "dropper",
    }
    async with running(make_settings(tmp_path, workers=1)) as srv:
        await srv.ready()
        async with client(srv.ws_url) as watcher:
            await watcher.ack({"type": "subscribe", "taskId": "dropper"})
            hung_up = 0
            for _ in range(5):  # impatient clients in a row, the same request, until done
                async with httpx.AsyncClient(base_url=srv.url, timeout=0.15) as impatient:
                    try:
                        await impatient.post(FALLBACK, json=body)
                    except httpx.ReadTimeout:
                        hung_up += 1
                    else:
                        break  # the job is done: the answer comes at once
            assert hung_up >= 1
            done = await watcher.wait(schemas.Completed, timeout=60)
        again = (await srv.post("/api/pipelines/preview", body)).json()
    assert again["status"] == "completed" and again["job_id"] == done.job_id
    result = srv.settings.results_root / "rembg" / f"{done.job_id}.png"
    with Image.open(result) as png:
        png.load()
    assert errors_in(server_logs) == []
    assert len(server_logs.records) <= 1, [r.getMessage() for r in server_logs.records]


def raise_soft_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def test_a_thousand_idle_sockets_and_one_rest_call(tmp_path: Path) -> None:
    """1,000 sockets that only hold their connection: the REST API still answers, and the
    socket cap (``ws_max_connections``) refuses the 1,001st with 1013."""
    raise_soft_fd_limit(4 * 1024)
    settings = make_settings(tmp_path, preload_models=[], ws_max_connections=1000)
    async with running(settings) as srv, contextlib.AsyncExitStack() as stack:

        async def hold() -> None:
            await stack.enter_async_context(raw_socket(srv.ws_url))

        for _ in range(20):  # 50 handshakes at a time
            await asyncio.gather(*(hold() for _ in range(50)))
        assert len(srv.state.hub.connections) == 1000

        health = await srv.http.get("/healthz")
        body = {"pipeline_id": "preprocessing", "image_base64": image(8), "params": {"flip": True}}
        preview = await srv.post(FALLBACK, body)
        assert health.status_code == 200 and preview.json()["status"] == "completed"

        async with raw_socket(srv.ws_url) as extra:
            assert await extra.close_code() == 1013


# --- the cache ----------------------------------------------------------------------------


async def test_a_corrupt_cached_png_is_recomputed(tmp_path: Path) -> None:
    body = {"pipeline_id": "preprocessing", "image_base64": image(11), "params": {"blur": True}}
    async with running(make_settings(tmp_path, preload_models=[])) as srv:
        first = (await srv.post(FALLBACK, body)).json()
        path = srv.settings.outputs_root.parent / first["result_path"]
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # torn, as a crash mid-write would leave it
        second = (await srv.post(FALLBACK, body)).json()
        third = (await srv.post("/api/pipelines/preview", body)).json()
    assert first["status"] == second["status"] == "completed"
    assert "ran on the server" in second["notes"][-1]  # not "found in the result cache"
    assert path.read_bytes() == whole
    assert third["status"] == "completed"  # and now a cache hit again


# --- ops that fail ------------------------------------------------------------------------


async def followers_see(srv: Server, body: dict[str, Any]) -> schemas.ServerFrame:
    """Submit ``body`` over a socket; the job's terminal frame."""
    async with client(srv.ws_url) as c:
        ack = await c.ack({"type": "submit", **body})
        return await c.wait(
            schemas.ServerFrame,  # type: ignore[arg-type]
            lambda f: (
                isinstance(f, schemas.Completed | schemas.Failed | schemas.Cancelled)
                and f.job_id == ack.job_id
            ),
            timeout=60,
        )


async def test_an_op_raising_fails_its_job_and_frees_the_worker(
    tmp_path: Path, server_logs: pytest.LogCaptureFixture
) -> None:
    def boom(image: Image.Image, params: Any, ctx: OpContext) -> Image.Image:
        raise RuntimeError("the sharpen op broke")

    def refuse(image: Image.Image, params: Any, ctx: OpContext) -> Image.Image:
        # Sizes are checked at intake now (a crop leaving nothing is a 422 there), so an op
        # refusing its image at run time is simulated.
        raise errors.InvalidParams("equalize: this image leaves nothing to equalise")

    broken = {
        **OPS,
        "sharpen": dataclasses.replace(OPS["sharpen"], apply=boom),
        "equalize": dataclasses.replace(OPS["equalize"], apply=refuse),
    }
    preprocessing = registry.make_pipeline(
        "preprocessing",
        "1",
        registry.PREPROCESSING_SUMMARY,
        registry.PREPROCESSING_OPS,
        flat=False,
        table=broken,
    )
    pipelines = {**registry.PIPELINES, "preprocessing": preprocessing}
    settings = make_settings(tmp_path, preload_models=[], workers=1)
    async with running(settings, pipelines) as srv:
        crash = {
            "pipeline_id": "preprocessing",
            "image_base64": image(21),
            "params": {"sharpen": True},
        }
        frame = await followers_see(srv, crash)
        assert isinstance(frame, schemas.Failed) and "the sharpen op broke" in frame.detail
        too_small = {
            "pipeline_id": "preprocessing",
            "image_base64": image(22),
            "params": {"equalize": True},
        }
        frame = await followers_see(srv, too_small)
        assert isinstance(frame, schemas.Failed) and "leaves nothing" in frame.detail
        fine = {"pipeline_id": "preprocessing", "image_base64": image(23), "params": {"flip": True}}
        assert isinstance(await followers_see(srv, fine), schemas.Completed)
        assert srv.state.jobs.executor.stats.running == 0
        assert not list(srv.settings.results_root.rglob(".tmp-*"))
    logged = errors_in(server_logs)
    assert len(logged) == 1 and "failed" in logged[0], logged  # the unexpected one, once


async def test_a_job_over_its_time_budget_is_stopped_at_its_next_check(tmp_path: Path) -> None:
    """Alpha matting is one call that cannot be interrupted. Past the budget the job fails
    at once, its followers hear it, and its thread stops at the op's next cancellation
    check (the one after the matte) instead of composing, encoding and writing a result
    nobody wants; the pool lives on."""
    endings: queue.SimpleQueue[str] = queue.SimpleQueue()
    real = OPS["rembg"]

    def observed(image: Image.Image, params: Any, ctx: OpContext) -> Image.Image:
        """The real op, telling the test how it ended."""
        try:
            result = real.apply(image, params, ctx)
        except BaseException as exc:
            endings.put(type(exc).__name__)
            raise
        endings.put("returned")
        return result

    rembg = registry.PIPELINES["rembg"]
    table = {"rembg": dataclasses.replace(real, apply=observed)}
    observed_rembg = registry.make_pipeline("rembg", "1", rembg.summary, ("rembg",), True, table)
    settings = make_settings(tmp_path, workers=1, job_timeout_s=0.3)
    async with running(settings, {**registry.PIPELINES, "rembg": observed_rembg}) as srv:
        await srv.ready()
        big = srv.settings.data_root / "big.png"  # over the 64 KiB frame limit as base64
        big.write_bytes(encode(sample_image(1024, 768, seed=31)))
        slow = {"pipeline_id": "rembg", "image_path": "data/big.png", "params": SLOW_PARAMS}
        frame = await followers_see(srv, slow)
        assert isinstance(frame, schemas.Failed) and "time budget of 0.3 s" in frame.detail
        # The thread may outlive the pool's second budget (the matte takes ~1.5 s here):
        # wait for the op itself, however long the matte takes.
        ending = await asyncio.to_thread(endings.get, timeout=60)
        assert ending == "JobCancelled", f"the op {ending} after its job failed"
        fine = {"pipeline_id": "preprocessing", "image_base64": image(32), "params": {"flip": True}}
        assert isinstance(await followers_see(srv, fine), schemas.Completed)
        assert srv.state.jobs.executor.stats.running == 0
    assert not list((settings.results_root / "rembg").glob("*.png"))  # stopped, never written


# --- telemetry ----------------------------------------------------------------------------


async def test_invented_telemetry_sources_keep_metrics_bounded(tmp_path: Path) -> None:
    """``source`` is client-chosen: 2,000 of them must not become 2,000 time series."""
    async with running(make_settings(tmp_path, preload_models=[])) as srv:
        for i in range(2000):
            report = {"source": f"worker-{i}", "queue_depth": 1}
            assert (await srv.post("/api/metrics", report)).status_code == 202
        metrics = (await srv.http.get("/metrics")).text
    prefix = "playground_rt_client_queue_depth{"
    series = [line for line in metrics.splitlines() if line.startswith(prefix)]
    assert len(series) <= 256, f"{len(series)} client_queue_depth series"


# --- memory -------------------------------------------------------------------------------


async def test_finished_jobs_do_not_keep_their_images(tmp_path: Path) -> None:
    """Finished jobs stay queryable (``GET /api/jobs/{id}``) for a while; their request's
    image bytes must not stay with them, or 2,000 kept jobs x max_image_bytes is the
    memory bound (``bench/budgets.py`` measures what this is worth in RSS)."""
    body = {"pipeline_id": "preprocessing", "image_base64": image(41), "params": {"flip": True}}
    async with running(make_settings(tmp_path, preload_models=[])) as srv:
        ran = (await srv.post(FALLBACK, body)).json()
        assert (await srv.job(ran["job_id"]))["state"] == "completed"
        kept = srv.state.jobs.get(ran["job_id"])
        assert kept.prepared.source.data == b"" and kept.prepared.source.sha256
        hit = (await srv.post(FALLBACK, body)).json()
        again = srv.state.jobs.get(hit["job_id"])
        assert again is not kept and again.cache_hit  # a new finished job, from the cache
        assert again.prepared.source.data == b"" and again.prepared.source.sha256
