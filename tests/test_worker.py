"""``playground-rt worker`` (``cluster.worker``) in this process, on a private Redis: a job
taken, run and acknowledged; a job handed out too often goes to the dead letters; a
stopping worker hands its job back; ``--require-gpu`` refuses a machine without CUDA."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import onnxruntime as ort
import pytest
import redis.asyncio as aioredis

from playground_rt import schemas
from playground_rt.cli import main as cli
from playground_rt.config import Settings
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.gpu import GpuRequired
from playground_rt.jobs.cluster.link import Link
from playground_rt.jobs.cluster.worker import Worker
from playground_rt.jobs.intake import Intake
from playground_rt.jobs.job import Prepared
from playground_rt.pipeline.sessions import ModelRegistry

from .conftest import MODEL_HOME, encode, make_settings, poll, require_model, sample_image
from .hubfixtures import unique_png
from .procserver import Redis

pytestmark = pytest.mark.redis


def settings_for(root: Path, redis: Redis, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"broker": redis.url, "workers": 1, "claim_idle_s": 0.5}
    return make_settings(root, **(values | overrides))


async def queue(settings: Settings, body: dict[str, Any], task_id: str = "t") -> Prepared:
    """Queue a job as a web node would (the ``submit`` script), for ``task_id``."""
    request = schemas.PipelineRequest(**body)
    models = ModelRegistry(MODEL_HOME, settings.outputs_root, 1)
    prepared = await Intake(settings, models).prepare(request)
    link = Link(settings)
    job = wire.QueuedJob(
        prepared.job_id,
        prepared.pipeline_id,
        prepared.plan.canonical,
        prepared.source.data,
        None,
        "test",
    )
    args = (task_id, task_id, wire.encode_body(job), 64, prepared.kind, 500, 1, "test", 60_000)
    reply = await link.run("submit", prepared.job_id, *args, "0", "0")
    assert reply[0] == b"queued", reply
    await link.close()
    return prepared


@contextlib.asynccontextmanager
async def working(settings: Settings) -> AsyncIterator[Worker]:
    worker = Worker(settings, name="inproc")
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def ended(store: aioredis.Redis, job_id: str, timeout: float = 30) -> list[Any]:
    """The job's frames in the history once one of them is terminal."""

    async def frames() -> list[Any]:
        raw: Any = await store.xrange(wire.HISTORY)
        history = [wire.decode_history(i, f).frame for i, f in raw]
        return [frame for frame in history if frame.job_id == job_id]

    def terminal(mine: list[Any]) -> bool:
        return any(isinstance(f, schemas.TERMINAL_FRAMES) for f in mine)

    return await poll(frames, terminal, f"a terminal frame of {job_id}", timeout, every=0.05)


async def test_a_job_is_taken_run_written_and_acknowledged(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    require_model()
    settings = settings_for(tmp_path, redis)
    prepared = await queue(settings, {"pipeline_id": "rembg", "image_base64": unique_png()})
    async with working(settings):
        frames = await ended(store, prepared.job_id)
    kinds = [type(f) for f in frames]
    assert kinds[0] is schemas.Queued and kinds[-1] is schemas.Completed
    assert schemas.Progress in kinds
    completed = frames[-1]
    assert completed.result_url == f"/results/rembg/{prepared.job_id}.png"
    assert completed.durations["queue"] >= 0 and completed.durations["op.rembg"] > 0
    assert (settings.results_root / "rembg" / f"{prepared.job_id}.png").is_file()
    assert await store.xlen(wire.JOBS) == 0  # acknowledged and deleted
    assert (await store.xpending(wire.JOBS, wire.GROUP))["pending"] == 0
    assert await store.hget(wire.job_key(prepared.job_id), "state") == b"completed"
    assert await store.hget(wire.DURATIONS, "rembg:u2netp") is not None
    assert not await store.exists(wire.worker_key("inproc"))  # its heartbeat went with it


async def test_a_job_handed_out_too_often_goes_to_the_dead_letters(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    settings = settings_for(tmp_path, redis, max_deliveries=3, preload_models=[])
    prepared = await queue(settings, {"pipeline_id": "rembg", "image_base64": unique_png()})
    # three workers took it and died: three deliveries, idle for long
    reply: Any = await store.xreadgroup(wire.GROUP, "ghost", {wire.JOBS: ">"}, count=1)
    entry = reply[0][1][0][0]
    for _ in range(2):
        await store.xclaim(wire.JOBS, wire.GROUP, "ghost", 0, [entry], idle=60_000)
    async with working(settings):
        frames = await ended(store, prepared.job_id)
    failed = frames[-1]
    assert isinstance(failed, schemas.Failed)
    assert failed.detail.startswith("given up after 3 attempts: the worker running it stopped")
    assert failed.code == "op_failed"
    dead: Any = await store.xrange(wire.DEAD)
    assert [f[b"job_id"] for _, f in dead] == [prepared.job_id.encode()]
    assert dead[0][1][b"deliveries"] == b"4"
    assert await store.xlen(wire.JOBS) == 0
    assert await store.hget(wire.job_key(prepared.job_id), "state") == b"failed"


async def test_a_stopping_worker_hands_its_job_back(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    settings = settings_for(tmp_path, redis, shutdown_grace_s=0, preload_models=[])
    big = base64.b64encode(encode(sample_image(2000, 1500, seed=77))).decode()
    params = {"resize": {"width": 4000}, "blur": {"kernelSize": 31}, "sharpen": True}
    body = {"pipeline_id": "preprocessing", "image_base64": big, "params": params}
    prepared = await queue(settings, body)
    key = wire.job_key(prepared.job_id)
    async with working(settings):
        await poll(lambda: store.hget(key, "state"), lambda s: s == b"running", "running", 30, 0.01)
    pending: Any = await store.xpending_range(wire.JOBS, wire.GROUP, "-", "+", 10)
    assert len(pending) == 1  # not acknowledged: still the job's entry
    assert pending[0]["time_since_delivered"] >= settings.claim_idle_s * 1000  # claimable now
    assert await store.hget(key, "state") == b"running"
    assert not (settings.results_root / "preprocessing" / f"{prepared.job_id}.png").exists()


def test_require_gpu_refuses_a_machine_without_cuda(tmp_path: Path) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    settings = make_settings(tmp_path, broker="redis://127.0.0.1:1/0", require_gpu=True)
    with pytest.raises(GpuRequired, match="CUDAExecutionProvider"):
        Worker(settings).prepare_models()
    argv = ["worker", "--require-gpu", "--broker", "redis://127.0.0.1:1/0"]
    argv += ["--outputs-root", str(tmp_path / "outputs"), "--model-home", str(MODEL_HOME)]
    assert cli.main(argv) == 2
