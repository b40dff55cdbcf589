"""Web nodes in remote mode (``cluster.remote``), in this process, on a private Redis and
without workers: what the cluster's scripts decide before any job runs (queue depth and
429, single-flight, withdrawals and supersedes across nodes, views of other nodes' jobs)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from playground_rt import schemas
from playground_rt.jobs.cluster import wire
from playground_rt.jobs.cluster.figures import Figures
from playground_rt.jobs.cluster.link import Link
from playground_rt.jobs.executor import Stats

from .conftest import Server, make_settings, poll, running
from .hubfixtures import client, unique_png
from .procserver import Redis

pytestmark = pytest.mark.redis


def web(root: Path, redis: Redis, **overrides: Any) -> Any:
    settings = make_settings(root, broker=redis.url, execute="remote", **overrides)
    return running(settings)


def rembg(task_id: str | None = None, image: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pipeline_id": "rembg",
        "image_base64": image or unique_png(),
        "params": {"strength": 0.5},
    }
    if task_id is not None:
        body["taskId"] = task_id
    return body


async def preview(node: Server, body: dict[str, Any]) -> dict[str, Any]:
    answer = await node.post("/api/pipelines/preview", body)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def test_the_queue_is_the_clusters(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    async with web(tmp_path / "a", redis, queue_size=2) as a, web(tmp_path / "b", redis) as b:
        await a.ready()
        await b.ready()
        first = await preview(a, rembg("q-1"))
        await preview(b, rembg("q-2"))
        full = await a.post("/api/pipelines/preview", rembg("q-3"))
        assert full.status_code == 429, full.text
        assert full.json()["code"] == "queue_full"
        assert "in the cluster" in full.json()["detail"]
        assert int(full.headers["retry-after"]) >= 1
        assert await store.zcard(wire.QUEUE) == 2
        assert await store.xlen(wire.JOBS) == 2
        view = (await b.http.get(f"/api/jobs/{first['job_id']}")).json()  # not b's job
        assert (view["state"], view["routed_backend"]) == ("queued", "server-rembg")
        assert view["position"] == 0 and view["eta_ms"] > 0
        assert (await a.http.get("/readyz")).json()["ready"] is True


async def test_single_flight_withdraw_and_cancel_across_nodes(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    image = unique_png()
    async with web(tmp_path / "a", redis) as a, web(tmp_path / "b", redis) as b:
        await a.ready()
        await b.ready()
        async with client(a.ws_url) as on_a, client(b.ws_url) as on_b:
            await on_a.ack({"type": "subscribe", "taskId": "one"})
            await on_b.ack({"type": "subscribe", "taskId": "two"})
            first = await preview(a, rembg("one", image))
            second = await preview(b, rembg("two", image))
            job_id = first["job_id"]
            assert second["job_id"] == job_id
            assert any("joined" in note for note in second["notes"])
            assert await store.xlen(wire.JOBS) == 1  # runs once
            queued = await on_b.wait(schemas.Queued, lambda f: f.job_id == job_id)
            assert queued.taskId == "two" and queued.cursor

            # "one" withdraws on b, the node that did not queue it: the job goes on for "two"
            gone = await b.http.delete(f"/api/jobs/{job_id}", params={"taskId": "one"})
            assert gone.status_code == 200 and gone.json()["state"] == "queued"
            notice = await on_a.wait(schemas.Cancelled, lambda f: f.job_id == job_id)
            assert notice.taskId == "one" and notice.detail == "cancelled by the client"
            assert (await store.hget(wire.job_key(job_id), "state")) == b"queued"
            again = await b.http.delete(f"/api/jobs/{job_id}", params={"taskId": "one"})
            assert again.status_code == 404

            # the last interest cancels the job for everyone, from a socket on a
            await on_a.ack({"type": "cancel", "job_id": job_id, "taskId": "two"})
            end = await on_b.wait(schemas.Cancelled, lambda f: f.job_id == job_id)
            assert end.taskId == "two"
            assert await store.xlen(wire.JOBS) == 0 and await store.zcard(wire.QUEUE) == 0
            await on_b.barrier()
            cancelled = [f for f in on_b.job_frames(job_id) if isinstance(f, schemas.Cancelled)]
            assert len(cancelled) == 1
            view = (await a.http.get(f"/api/jobs/{job_id}")).json()
            assert view["state"] == "cancelled"


async def test_a_newer_request_supersedes_on_any_node(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    async with web(tmp_path / "a", redis) as a, web(tmp_path / "b", redis) as b:
        await a.ready()
        await b.ready()
        async with client(b.ws_url) as c:
            await c.ack({"type": "subscribe", "taskId": "slider"})
            old = await preview(a, rembg("slider"))
            new = await preview(b, rembg("slider"))
            end = await c.wait(schemas.Cancelled, lambda f: f.job_id == old["job_id"])
            assert end.detail == "superseded by a newer request of task slider"
            assert await store.zrange(wire.QUEUE, 0, -1) == [new["job_id"].encode()]


async def test_without_redis_a_node_refuses_with_503_and_still_stops(tmp_path: Path) -> None:
    own = Redis(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    await own.start()

    async def readyz(node: Server) -> int:
        return (await node.http.get("/readyz")).status_code

    try:
        async with asyncio.timeout(30), web(tmp_path / "a", own) as a:  # and stops in time
            await a.ready()
            own.stop()
            answer = await a.post("/api/pipelines/preview", rembg("gone"))
            assert answer.status_code == 503, answer.text
            assert answer.json()["code"] == "not_ready"
            await poll(lambda: readyz(a), lambda status: status == 503, "/readyz 503", 10)
    finally:
        own.stop()


async def test_the_figures_loop_ends_at_stop_even_when_redis_swallows_its_cancel(
    tmp_path: Path, redis: Redis, store: aioredis.Redis
) -> None:
    """redis-py can turn a cancel that lands inside a command into a connection error
    (redis/redis-py#2028, #2551); the polling loop rides those out, so cancelling alone
    once left a node's shutdown waiting on it for ever (a CI run: "uvicorn did not stop")."""
    figures = Figures(Link(make_settings(tmp_path, broker=redis.url)), Stats())
    read, reads = figures.read, []

    async def read_as_redis_py_may() -> None:
        try:
            await read()
            reads.append(1)
            await asyncio.sleep(0.05)  # where the cancel lands, as it may inside a command
        except asyncio.CancelledError:
            raise RedisConnectionError("Connection closed by server.") from None

    figures.read = read_as_redis_py_may  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.create_task(figures.run(stop))
    await poll(lambda: asyncio.sleep(0.01), lambda _: len(reads) > 0, "a read", 5)
    stop.set()  # as RemoteJobs.stop does: the event, then the cancel
    loop.cancel()
    done, _ = await asyncio.wait({loop}, timeout=2)
    assert done, "the figures loop ignored stop"
    await figures.link.close()
