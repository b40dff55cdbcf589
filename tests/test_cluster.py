"""Remote mode end to end, with real processes: a private ``redis-server``, two web nodes
(``serve`` with ``PLAYGROUND_EXECUTE=remote``) and two ``playground-rt worker``s of one
thread each, sharing one outputs folder (``clusterprocs``).

The tests share the cluster and run in order; the last two are destructive (a worker
killed with SIGKILL, then Redis killed and restarted without persistence).
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from playground_rt import schemas

from .clusterprocs import Cluster, cluster
from .conftest import encode, poll, sample_image
from .hubfixtures import Client, client, rembg_submit

pytestmark = pytest.mark.redis

CLAIM_IDLE_S = 2.0
TERMINAL = (schemas.Completed, schemas.Failed, schemas.Cancelled)
_seeds = iter(range(50_000, 60_000))


@pytest.fixture(scope="module")
async def nodes(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    root = tmp_path_factory.mktemp("cluster")
    async with cluster(
        root, web=["a", "b"], workers=["w1", "w2"], claim_idle_s=CLAIM_IDLE_S
    ) as found:
        yield found


def big_png(width: int = 1600, height: int = 1200) -> str:
    """A distinct image slow enough to be caught running (a few hundred ms on one thread);
    too big for a ``submit`` frame: it goes over REST (:func:`preview`)."""
    return base64.b64encode(encode(sample_image(width, height, seed=next(_seeds)))).decode()


async def preview(url: str, task_id: str, **body: Any) -> str:
    """Queue a server job over REST for ``task_id`` (followed on a socket); its job id."""
    request = {"pipeline_id": "rembg", "params": {}, "image_base64": big_png(), **body}
    answer = await post(url, "/api/pipelines/preview", dict(request, taskId=task_id))
    assert answer.status_code == 200, answer.text
    job_id: str = answer.json()["job_id"]
    return job_id


def task() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


async def terminals(c: Client, job_id: str, timeout: float = 30) -> list[schemas.JobFrame]:
    """The job's terminal frames on ``c``, once there is one (and a barrier later, so a
    second one would have arrived too)."""
    await c.wait_any(lambda f: isinstance(f, TERMINAL) and f.job_id == job_id, timeout)
    await c.barrier()
    return [f for f in c.job_frames(job_id) if isinstance(f, TERMINAL)]


async def post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        return await http.post(
            path, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
        )


async def test_ten_jobs_each_follower_hears_one_end(nodes: Cluster) -> None:
    a, b = nodes.web["a"], nodes.web["b"]
    tasks = [task() for _ in range(10)]
    async with client(a.ws_url) as on_a, client(b.ws_url) as on_b:
        for t in tasks:  # a follower on the other node, by taskId
            await on_b.ack({"type": "subscribe", "taskId": t})
        acks = [await on_a.ack(rembg_submit(t)) for t in tasks]
        job_ids = [ack.job_id for ack in acks]
        assert len(set(job_ids)) == 10 and None not in job_ids
        for job_id in job_ids:  # and by job id: one recipient, one frame each
            assert job_id is not None
            await on_b.ack({"type": "subscribe", "job_id": job_id})
        for job_id in job_ids:
            assert job_id is not None
            for c in (on_a, on_b):
                ends = await terminals(c, job_id)
                assert [type(f) for f in ends] == [schemas.Completed], ends
        frames = on_a.job_frames(job_ids[0])
        assert all(f.cursor for f in frames)
        assert isinstance(frames[0], schemas.Queued) and frames[0].taskId == tasks[0]
        runners = {(await nodes.job(j))["worker"] for j in job_ids if j is not None}
        assert runners == {"w1", "w2"}, runners


async def test_telemetry_shows_every_worker(nodes: Cluster) -> None:
    async with client(nodes.web["b"].ws_url) as c:
        await c.ack({"type": "subscribe", "channel": "telemetry"})

        def both(f: schemas.ServerFrame) -> bool:  # (heartbeats lag up to a second)
            if not isinstance(f, schemas.Telemetry):
                return False
            return {w.name for w in f.cluster} >= {"w1", "w2"} and sum(
                w.done for w in f.cluster
            ) >= 10

        frame = await c.wait_any(both, timeout=10)
    assert isinstance(frame, schemas.Telemetry)
    assert frame.workers >= 2
    for worker in frame.cluster:
        assert worker.host and worker.pid > 0 and worker.threads == 1
        assert "u2netp" in worker.models
        assert worker.providers == ["CPUExecutionProvider"]


async def test_the_same_request_on_two_web_nodes_runs_once(nodes: Cluster) -> None:
    body = {"pipeline_id": "rembg", "image_base64": big_png(800, 600), "params": {}}
    answers = await asyncio.gather(
        post(nodes.web["a"].url, "/api/pipelines/fallback", dict(body, taskId=task())),
        post(nodes.web["b"].url, "/api/pipelines/fallback", dict(body, taskId=task())),
    )
    results = [r.json() for r in answers]
    assert [r["status"] for r in results] == ["completed", "completed"], results
    assert results[0]["job_id"] == results[1]["job_id"]
    notes = " ".join(n for r in results for n in r["notes"])
    assert "joined" in notes or "found in the result cache" in notes, notes
    history = await nodes.history(results[0]["job_id"])
    starts = [
        e for e in history if isinstance(e.frame, schemas.Progress) and e.frame.stage == "rembg"
    ]
    assert len(starts) == 1, [e.frame for e in history]  # one run
    assert sum(isinstance(e.frame, schemas.Completed) for e in history) == 1


async def test_resume_on_the_other_web_node_replays_exactly(nodes: Cluster) -> None:
    a, b = nodes.web["a"], nodes.web["b"]
    t = task()
    async with client(a.ws_url) as reference:
        await reference.ack({"type": "subscribe", "taskId": t})
        async with client(a.ws_url) as first:
            await first.ack({"type": "subscribe", "taskId": t})
            job_id = await preview(a.url, t, image_base64=big_png(640, 480))
            await first.wait(schemas.Progress, lambda f: f.job_id == job_id)
            seen = list(first.job_frames(job_id))
        await terminals(reference, job_id)
    last = seen[-1]
    async with client(b.ws_url) as second:
        resume = {
            "type": "resume",
            "last_seq": last.seq,
            "epoch": last.epoch,
            "cursor": last.cursor,
            "taskIds": [t],
        }
        await second.ack(resume)
        replayed = second.job_frames(job_id)
        assert not [f for f in second.frames if isinstance(f, schemas.Gap)]

    def comparable(frames: list[schemas.JobFrame]) -> list[Any]:
        return [msgspec.structs.replace(f, seq=0, epoch="") for f in frames]

    everything = reference.job_frames(job_id)
    assert comparable(everything[: len(seen)]) == comparable(seen)
    missed = everything[len(seen) :]
    assert missed and isinstance(missed[-1], schemas.Completed)
    assert comparable(replayed) == comparable(missed)
    seqs = [f.seq for f in second.frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_a_cancel_on_another_node_stops_the_worker(nodes: Cluster) -> None:
    a, b = nodes.web["a"], nodes.web["b"]
    t = task()
    params = {"resize": {"width": 3000}, "blur": {"kernelSize": 31}, "sharpen": True}
    params |= {"equalize": True, "autocontrast": True, "grayscale": True}
    async with client(a.ws_url) as on_a, client(b.ws_url) as on_b:
        await on_a.ack({"type": "subscribe", "taskId": t})
        job_id = await preview(a.url, t, pipeline_id="preprocessing", params=params)
        await on_a.wait(schemas.Progress, lambda f: f.job_id == job_id)
        worker = (await nodes.job(job_id))["worker"]
        await on_b.ack({"type": "cancel", "job_id": job_id, "taskId": t})
        ends = await terminals(on_a, job_id)
        assert [type(f) for f in ends] == [schemas.Cancelled]
        assert isinstance(ends[0], schemas.Cancelled)
        assert ends[0].detail == "cancelled by the client"
    log = nodes.workers[worker]
    for _ in range(100):
        if f"job {job_id}: stopping here" in log.output():
            break
        await asyncio.sleep(0.1)
    assert f"job {job_id}: stopping here (it ended)" in log.output()
    assert (await nodes.job(job_id))["state"] == "cancelled"
    assert not (nodes.outputs / "playground" / "preprocessing" / f"{job_id}.png").exists()


async def test_a_web_node_killed_loses_nothing_it_queued(nodes: Cluster) -> None:
    a, b = nodes.web["a"], nodes.web["b"]
    tasks = [task() for _ in range(3)]
    async with client(a.ws_url) as on_a:
        for t in tasks:
            await on_a.ack({"type": "subscribe", "taskId": t})
        job_ids = [await preview(b.url, t, image_base64=big_png(160, 120)) for t in tasks]
        b.kill()  # the jobs are in Redis, not in b
        for job_id in job_ids:
            assert [type(f) for f in await terminals(on_a, job_id)] == [schemas.Completed]


async def test_a_worker_killed_mid_job_its_job_completes_on_the_other(nodes: Cluster) -> None:
    a = nodes.web["a"]
    async with client(a.ws_url) as c:
        for _attempt in range(3):
            t = task()
            await c.ack({"type": "subscribe", "taskId": t})
            job_id = await preview(a.url, t, image_base64=big_png(1000, 750))
            record = await _running(nodes, job_id)
            victim = nodes.workers[record["worker"]]
            victim.kill()
            if (await nodes.job(job_id))["state"] == "running":
                break  # killed mid-job
            await terminals(c, job_id)  # it ended first: try again with a slower start
        else:
            pytest.fail("could not catch a job running")
        ends = await terminals(c, job_id, timeout=CLAIM_IDLE_S * 3 + 30)
        assert [type(f) for f in ends] == [schemas.Completed], ends
    survivor = next(w for w in nodes.workers.values() if w is not victim)
    assert (await nodes.job(job_id))["worker"] == survivor.name
    assert "took over entry" in survivor.output()


async def _running(nodes: Cluster, job_id: str) -> dict[str, str]:
    def running(record: dict[str, str]) -> bool:
        return record.get("state") == "running"

    return await poll(lambda: nodes.job(job_id), running, f"{job_id} running", 30, 0.005)


async def test_a_redis_restart_loses_no_job(nodes: Cluster, tmp_path: Path) -> None:
    a = nodes.web["a"]
    tasks = [task() for _ in range(4)]
    async with client(a.ws_url) as c:
        for t in tasks:
            await c.ack({"type": "subscribe", "taskId": t})
        job_ids = [await preview(a.url, t, image_base64=big_png(320, 240)) for t in tasks]
        await c.wait(schemas.Progress, lambda f: f.job_id in job_ids)
        nodes.redis.stop()  # SIGKILL, no persistence: Redis comes back empty
        await asyncio.sleep(0.5)
        await nodes.redis.start()
        for job_id in job_ids:
            ends = await terminals(c, job_id, timeout=60)
            assert [type(f) for f in ends] == [schemas.Completed], ends
        after = await c.ack(rembg_submit(task()))  # the nodes reconnected
        assert after.job_id is not None
        assert [type(f) for f in await terminals(c, after.job_id)] == [schemas.Completed]
    async with httpx.AsyncClient(trust_env=False) as http:
        assert (await http.get(a.url + "/readyz")).status_code == 200
